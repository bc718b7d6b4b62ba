"""Parity of the exported ONNX step with the PyTorch model, on real recorded sequences.

Each side carries its own state over every step (so drift accumulates as it would in
serving), for batch 1 and batch 8, and every output is compared against the contract's
tolerances. Top-k ids must be identical except where the two neighbouring scores tie within
tolerance. A batched ONNX step must also equal the same rows stepped one by one. The
report lists every check, so a mismatch shows each output that differs and by how much.
A bundle with attention gets, on both sides, each step's recent-items window built by the serving
rule (export/bundle_eval.py ``ServingWindows``), so the window input is part of every check.
The runs graph (runs.onnx, what the worker steps) must equal step.onnx bit for bit: the same
sequences cut into uneven runs, scored rows in shuffled order, against the step graph event by event.
A two-stage bundle is checked through its exact scan of the item table (``step(exact=True)``:
the query graph and the table against PyTorch); its index is export/recall.py's gate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from streamrec.export import contract
from streamrec.export.bundle_eval import ServingWindows
from streamrec.export.runtime import Bundle
from streamrec.model.checkpoint import Checkpoint

MIN_STEPS = 60
BATCHES = (1, 8)


@dataclass(frozen=True)
class Check:
    name: str
    max_abs: float
    tol: float
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.tol


@dataclass
class ParityReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def text(self) -> str:
        lines = [f"{'check':<44} {'max |diff|':>12} {'tolerance':>10}  result"]
        for c in self.checks:
            lines.append(f"{c.name:<44} {c.max_abs:>12.3g} {c.tol:>10.1g}  {'ok' if c.ok else 'MISMATCH'}"
                         + (f"  ({c.detail})" if c.detail else ""))
        return "\n".join(lines)


class ParityError(RuntimeError):
    def __init__(self, report: ParityReport):
        self.report = report
        bad = ", ".join(f"{c.name} off by {c.max_abs:.3g} (tol {c.tol:g})" for c in report.failures())
        super().__init__(f"ONNX step does not reproduce the PyTorch model: {bad}\n{report.text()}")


def _event_matrix(sequences: list[dict], batch: int, steps: int) -> np.ndarray:
    """[3, steps, batch] item/type/gap indices: each row replays one recorded sequence (cycled
    through the recorded set when shorter than ``steps``: still real events)."""
    out = np.zeros((3, steps, batch), dtype=np.int64)
    for b in range(batch):
        stream = {"items": [], "types": [], "gaps": []}
        j = b
        while len(stream["items"]) < steps:
            s = sequences[j % len(sequences)]
            for key in stream:
                stream[key].extend(s[key])
            j += batch
        out[0, :, b], out[1, :, b], out[2, :, b] = (stream[k][:steps] for k in ("items", "types", "gaps"))
    return out


def _topk_check(name: str, ref_scores: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> list[Check]:
    """ONNX top list vs the torch full scores: scores at the ONNX ids, and id order."""
    n = ids.shape[1]
    at_ids = np.take_along_axis(ref_scores, ids, axis=1)
    ref_top = -np.sort(-ref_scores, axis=1)[:, :n]
    score_err = float(np.max(np.abs(at_ids - scores))) if scores.size else 0.0
    # an id that differs from torch's id at position j is fine when its torch score ties
    # (within tolerance) with torch's j-th best score
    order_err = float(np.max(np.abs(at_ids - ref_top))) if scores.size else 0.0
    return [Check(f"{name} top_scores", score_err, contract.SCORE_ATOL),
            Check(f"{name} top_items (tie gap)", order_err, contract.SCORE_ATOL,
                  "ids may differ only between scores tied within tolerance")]


@torch.no_grad()
def check_parity(ckpt: Checkpoint, bundle_dir: Path, sequences: list[dict] | None = None,
                 steps: int = MIN_STEPS) -> ParityReport:
    seqs = sequences or ckpt.data.get("parity_sample")
    if not seqs:
        raise ValueError("no recorded sequences for the parity check (the checkpoint has no "
                         "parity_sample; pass --data to export)")
    bundle = Bundle.load(bundle_dir)
    model = ckpt.model.eval()
    report = ParityReport()
    worst: dict[str, float] = {}
    for batch in BATCHES:
        ev = _event_matrix(seqs, batch, steps)
        th, tc = model.init_state(batch)
        oh, oc = bundle.init_state(batch)
        windows = ServingWindows(batch, bundle.manifest.m, bundle.attention)
        errs = {"h_out": 0.0, "c_out": 0.0}
        topk: list[Check] = []
        for t in range(steps):
            it, ty, gp = (torch.from_numpy(ev[i, t]) for i in range(3))
            win = windows.after(range(batch), ev[0, t])
            th, tc, ts = model.step(it, ty, gp, th, tc, None if win is None else torch.from_numpy(win))
            out = bundle.step(ev[0, t], ev[1, t], ev[2, t], oh, oc, exact=bundle.indexed, window=win)
            oh, oc = out.h, out.c
            errs["h_out"] = max(errs["h_out"], float(np.abs(th.numpy() - oh).max()))
            errs["c_out"] = max(errs["c_out"], float(np.abs(tc.numpy() - oc).max()))
            ref = ts.numpy().copy()
            ref[:, :2] = -np.inf
            topk = _merge(topk, _topk_check(f"batch {batch}", ref, out.top_items, out.top_scores))
        for name, v in errs.items():
            report.checks.append(Check(f"batch {batch} {name} over {steps} steps", v, contract.STATE_ATOL))
        report.checks.extend(topk)
        worst[f"batch {batch}"] = max(errs.values())
    report.checks.extend(_batched_vs_rows(bundle, seqs))
    report.checks.extend(_runs_vs_step(bundle, seqs))
    return report


def _merge(old: list[Check], new: list[Check]) -> list[Check]:
    if not old:
        return new
    return [max(a, b, key=lambda c: c.max_abs) for a, b in zip(old, new)]


def _batched_vs_rows(bundle: Bundle, seqs: list[dict], batch: int = 8, steps: int = 20) -> list[Check]:
    """A batched step equals the same rows stepped one by one."""
    ev = _event_matrix(seqs, batch, steps)
    h, c = bundle.init_state(batch)
    rows = [bundle.init_state(1) for _ in range(batch)]
    windows = ServingWindows(batch, bundle.manifest.m, bundle.attention)
    err = {"h_out": 0.0, "c_out": 0.0, "top_scores": 0.0}
    id_mismatch = 0
    for t in range(steps):
        win = windows.after(range(batch), ev[0, t])
        out = bundle.step(ev[0, t], ev[1, t], ev[2, t], h, c, exact=bundle.indexed, window=win)
        h, c = out.h, out.c
        for b in range(batch):
            one = bundle.step(ev[0, t, b:b + 1], ev[1, t, b:b + 1], ev[2, t, b:b + 1], *rows[b], exact=bundle.indexed,
                              window=None if win is None else win[b:b + 1])
            rows[b] = (one.h, one.c)
            err["h_out"] = max(err["h_out"], float(np.abs(one.h[:, 0] - h[:, b]).max()))
            err["c_out"] = max(err["c_out"], float(np.abs(one.c[:, 0] - c[:, b]).max()))
            err["top_scores"] = max(err["top_scores"], float(np.abs(one.top_scores[0] - out.top_scores[b]).max()))
            diff = one.top_items[0] != out.top_items[b]
            if diff.any() and np.abs(np.diff(out.top_scores[b])).min(initial=np.inf) > contract.SCORE_ATOL:
                id_mismatch += int(diff.sum())
    checks = [Check(f"batched vs one-by-one {k}", v, contract.TOLERANCE[k]) for k, v in err.items()]
    checks.append(Check("batched vs one-by-one top_items", float(id_mismatch), 0.0, "ids differing without a tie"))
    return checks


def _runs_vs_step(bundle: Bundle, seqs: list[dict], batch: int = 8, steps: int = MIN_STEPS,
                  seed: int = 0) -> list[Check]:
    """runs.onnx over uneven runs (1 to 16 events per user and call, users skipping calls, rows shuffled)
    against step.onnx event by event: every output equal bit for bit. The raw graph outputs (top list or,
    for two-stage bundles, the query) are compared, so the index plays no part."""
    if bundle.runs is None:
        return []
    ev = _event_matrix(seqs, batch, steps)
    windows = ServingWindows(batch, bundle.manifest.m, bundle.attention)
    h, c = bundle.init_state(batch)
    ref_rows: dict[tuple[int, int], list[np.ndarray]] = {}
    ref_windows: dict[tuple[int, int], np.ndarray] = {}
    for t in range(steps):  # the reference: step.onnx, all users, one event per call
        win = windows.after(range(batch), ev[0, t])
        h, c, *per_row = bundle.session.run(None, bundle.feeds(ev[0, t], ev[1, t], ev[2, t], h, c, win))
        for b in range(batch):
            ref_rows[b, t] = [x[b] for x in per_row]
            if win is not None:
                ref_windows[b, t] = win[b]
    ref_state = (h, c)
    rng = np.random.default_rng(seed)
    done = np.zeros(batch, np.int64)
    rh, rc = bundle.init_state(batch)
    differing = compared = 0
    while (done < steps).any():
        users = [b for b in range(batch) if done[b] < steps and rng.random() < 0.8] or [int(np.argmin(done))]
        length = np.array([min(int(rng.integers(1, 17)), steps - done[b]) for b in users], np.int32)
        T = int(length.max())
        mats = np.zeros((3, len(users), T), np.int64)
        cells = [(j, t) for j in range(len(users)) for t in range(length[j])]
        for j, b in enumerate(users):
            mats[:, j, :length[j]] = ev[:, done[b]:done[b] + length[j], b]
        order = rng.permutation(len(cells))
        rows = np.array([cells[o][0] * T + cells[o][1] for o in order], np.int64)
        feeds = {"item": mats[0], "event_type": mats[1], "gap": mats[2], "h": rh[:, users], "c": rc[:, users],
                 "rows": rows, "length": length}
        if bundle.attention > 0:
            feeds["window"] = np.stack([ref_windows[users[cells[o][0]], done[users[cells[o][0]]] + cells[o][1]]
                                        for o in order])
        h2, c2, *per_row = bundle.runs.run(None, feeds)
        rh[:, users], rc[:, users] = h2, c2
        for r, o in enumerate(order):
            j, t = cells[o]
            for got, want in zip(per_row, ref_rows[users[j], done[users[j]] + t]):
                compared += 1
                differing += int(not np.array_equal(got[r], want))
        done[users] += length
    differing += int(not np.array_equal(rh, ref_state[0])) + int(not np.array_equal(rc, ref_state[1]))
    return [Check("runs.onnx vs step.onnx (bit for bit)", float(differing), 0.0,
                  f"{differing} of {compared + 2} outputs differ; uneven runs of up to 16 events")]
