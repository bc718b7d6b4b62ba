"""Plain-text tables for the terminal."""
from __future__ import annotations

COLUMNS = ("HR@10", "NDCG@10", "MRR@10", "HR@20", "NDCG@20", "MRR@20", "AUC")


def metrics_table(rows: dict[str, dict], columns=COLUMNS) -> str:
    cols = [c for c in columns if any(c in r for r in rows.values())]
    width = max([len(n) for n in rows] + [8])
    head = f"{'':<{width}} " + " ".join(f"{c:>8}" for c in cols) + f" {'targets':>8}"
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        vals = " ".join(f"{r[c]:>8.4f}" if c in r else f"{'-':>8}" for c in cols)
        lines.append(f"{name:<{width}} {vals} {r.get('n_targets', 0):>8}")
    return "\n".join(lines)
