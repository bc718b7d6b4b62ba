"""Recall of a two-stage bundle's index against the exact scan: the export gate beside parity.

The states are stepped from real histories (the recorded sequences the checkpoint keeps for
parity, or others passed in): every step of every sequence gives one user state, and with it the
scoring vector. For each, the bundle's indexed top list (candidates re-scored exactly) is
compared with the exact top list over the whole item table: recall@10 and recall@N (N = k + m,
what the worker takes its top-k from after dropping seen items). These are the lists the worker
gets: a state for which the index finds fewer than N items is answered by the full scan (counted
as ``full_scan_rows``: a sign of an index too coarse for the catalog). Export refuses a bundle
whose recall@10 is below the threshold (default 0.95). Torch-free.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from streamrec.export import contract
from streamrec.export.ann import recall
from streamrec.export.bundle_eval import ServingWindows
from streamrec.export.runtime import Bundle

MIN_RECALL_AT_10 = 0.95


@dataclass(frozen=True)
class RecallReport:
    recall_at_10: float
    recall_at_n: float
    n: int  # the bundle's n_top (k + m, capped by the catalog)
    states: int
    sequences: int
    threshold: float
    full_scan_rows: int = 0  # states the index found fewer than n items for: answered by the full scan

    @property
    def ok(self) -> bool:
        return self.recall_at_10 >= self.threshold

    def to_dict(self) -> dict:
        return {"recall@10": round(self.recall_at_10, 5), f"recall@{self.n}": round(self.recall_at_n, 5),
                **{k: v for k, v in asdict(self).items() if k in ("states", "sequences", "threshold", "full_scan_rows")}}

    def text(self) -> str:
        return (f"index recall on {self.states} states of {self.sequences} recorded sequences: "
                f"recall@10 {self.recall_at_10:.4f}, recall@{self.n} {self.recall_at_n:.4f}, "
                f"{self.full_scan_rows} answered by the full scan "
                f"(gate: recall@10 >= {self.threshold:g}: {'ok' if self.ok else 'BELOW'})")


class RecallError(RuntimeError):
    def __init__(self, report: RecallReport):
        self.report = report
        super().__init__(f"the item index misses too much: {report.text()}")


def scoring_vectors(bundle: Bundle, sequences: list[dict], batch: int = 64) -> np.ndarray:
    """[states, Q+1] augmented scoring vectors after every event of every sequence (states carried;
    attention bundles: each step's window by the serving rule, ``ServingWindows``)."""
    out = []
    for a in range(0, len(sequences), batch):
        group = sequences[a:a + batch]
        h, c = bundle.init_state(len(group))
        windows = ServingWindows(len(group), bundle.manifest.m, bundle.attention)
        for t in range(max(len(s["items"]) for s in group)):
            rows = [j for j, s in enumerate(group) if t < len(s["items"])]
            item = np.array([group[j]["items"][t] for j in rows], np.int64)
            feeds = bundle.feeds(item, np.array([group[j]["types"][t] for j in rows], np.int64),
                                 np.array([group[j]["gaps"][t] for j in rows], np.int64),
                                 h[:, rows], c[:, rows], windows.after(rows, item))
            h2, c2, q = bundle.session.run(list(contract.QUERY_OUTPUT_NAMES), feeds)
            h[:, rows], c[:, rows] = h2, c2
            out.append(bundle.augment(q))
    return np.concatenate(out)


def measure(bundle: Bundle, sequences: list[dict], threshold: float = MIN_RECALL_AT_10) -> RecallReport:
    if not bundle.indexed:
        raise ValueError("recall is measured for bundles with an item index")
    q = scoring_vectors(bundle, sequences)
    scans = bundle.full_scan_rows
    approx, exact = [], []
    for a in range(0, len(q), 256):
        approx.append(bundle.top_indexed(q[a:a + 256])[0])
        exact.append(bundle.top_exact(q[a:a + 256])[0])
    approx, exact = np.concatenate(approx), np.concatenate(exact)
    n = bundle.manifest.n_top
    return RecallReport(recall(approx, exact, min(10, n)), recall(approx, exact, n), n, len(q), len(sequences),
                        threshold, bundle.full_scan_rows - scans)
