"""PNG plots for people who would rather look than read (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def training_curve(history: list[dict], path: str | Path, title: str = "training") -> Path:
    """Loss and validation NDCG@10 / HR@10 per epoch; the best epoch marked."""
    epochs = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(epochs, [h["loss"] for h in history], marker="o")
    a1.set(xlabel="epoch", ylabel="cross-entropy (train)", title="training loss")
    for key in ("valid_NDCG@10", "valid_HR@10"):
        if any(key in h for h in history):
            a2.plot(epochs, [h.get(key, float("nan")) for h in history], marker="o", label=key[6:])
    if any("valid_NDCG@10" in h for h in history):
        best = max(history, key=lambda h: h.get("valid_NDCG@10", float("-inf")))
        a2.axvline(best["epoch"], color="grey", ls="--", lw=1, label=f"best epoch {best['epoch']}")
    a2.set(xlabel="epoch", ylabel="validation metric", title="validation (full catalog)")
    a2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
