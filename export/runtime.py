"""Load an artifact bundle and step it with ONNX Runtime (numpy + onnxruntime only).

Importing this module never imports torch; the streaming worker depends on that.

    bundle = Bundle.load("bundles/m1")          # verifies checksums and dims, or BundleError
    h, c = bundle.init_state(batch=4)
    out = bundle.step(items, types, gaps, h, c)  # out.h, out.c, out.top_items, out.top_scores

A bundle with attention over the recent-items window (``manifest.attention`` = A > 0) also needs
each user's window: ``step(..., window=contract.windows_of(seens, A))``, [B, A] int64, from the seen
windows after this event was remembered (export/contract.py).

Many events of each user in one call (the worker's micro-batches):
``run(items, types, gaps, h, c, length, rows)`` with [B, T] event matrices steps each user b through
its first ``length[b]`` events and scores the events ``rows`` (b*T + t): the bundle's ``runs.onnx``,
one ONNX call; bundles without it (exported before it existed) step the same events one wave per t.
The export gate keeps runs.onnx equal to step.onnx bit for bit, so both paths give the same outputs
(``step`` runs step.onnx: at one event per user it is as fast, without the runs' extra inputs). A
bundle with runs.onnx loads step.onnx only when something steps it, so the worker, which steps runs
only, holds the graphs' item table once.

A two-stage bundle (``manifest.index``, export/ann.py) answers the same ``step``: its graph gives
the scoring vector, the item index gives candidates, and they are re-scored exactly here
(``step(..., exact=True)`` scans the whole item table instead: the reference for parity and recall).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from streamrec.export import contract
from streamrec.export.manifest import BundleError, Manifest, verify_files
from streamrec.model.vocab import Vocab


@dataclass(frozen=True)
class StepResult:
    h: np.ndarray  # [L, B, H] float32
    c: np.ndarray
    top_items: np.ndarray  # [B, N] int64 item indices, best first ([R, N] from ``run``: one per scored event)
    top_scores: np.ndarray  # [B, N] float32 (likewise)


class Bundle:
    """A verified bundle: manifest, vocabularies and ONNX Runtime sessions for its graphs."""

    def __init__(self, root: Path, manifest: Manifest, items: Vocab, types: Vocab,
                 session: ort.InferenceSession | None, index=None, table: np.ndarray | None = None,
                 runs: ort.InferenceSession | None = None, threads: int = 1):
        self.root, self.manifest, self.items, self.types = root, manifest, items, types
        self._session, self._threads = session, threads  # step.onnx (None: loaded on first use, see ``session``)
        self.runs = runs  # the runs graph's session (None: a bundle exported before runs.onnx)
        self.index, self.table = index, table  # two-stage bundles only
        self.full_scan_rows = 0  # rows the index found fewer than n_top items for (answered by the full scan)

    @classmethod
    def load(cls, path: str | os.PathLike[str], threads: int = 1) -> Bundle:
        root = Path(path)
        mpath = root / contract.MANIFEST_FILE
        if not mpath.is_file():
            raise BundleError(f"{root} is not a bundle: no {contract.MANIFEST_FILE} "
                              f"(make one with: streamrec export --model DIR --out {root})")
        manifest = Manifest.from_json(mpath.read_text(encoding="utf-8"))
        missing = {contract.STEP_FILE, contract.ITEMS_FILE, contract.TYPES_FILE} - set(manifest.files)
        if manifest.indexed:
            missing |= {manifest.index.get("file"), manifest.index.get("table")} - set(manifest.files)
        if missing:
            raise BundleError(f"bundle {root} refused: manifest lists no checksum for {sorted(missing)}")
        verify_files(root, manifest)
        items = Vocab.load(root / contract.ITEMS_FILE)
        types = Vocab.load(root / contract.TYPES_FILE)
        runs = _session(root / contract.RUNS_FILE, threads) if contract.RUNS_FILE in manifest.files else None
        session = None if runs is not None else _session(root / contract.STEP_FILE, threads)
        index = table = None
        if manifest.indexed:
            from streamrec.export.ann import IndexUnavailable, ItemIndex

            try:
                index = ItemIndex(root / manifest.index["file"], manifest.index["kind"], manifest.index["params"], threads)
            except IndexUnavailable as exc:
                raise BundleError(f"bundle {root}: {exc}") from None
            except (ValueError, RuntimeError) as exc:  # another kind of index, or faiss cannot read it
                raise BundleError(f"bundle {root} refused: {exc}") from None
            # memory-mapped (pages shared between processes, read on demand), as a plain ndarray: numpy's
            # memmap subclass costs microseconds per indexing call
            table = np.load(root / manifest.index["table"], mmap_mode="r", allow_pickle=False).view(np.ndarray)
        bundle = cls(root, manifest, items, types, session, index, table, runs, threads)
        bundle._check_dims()
        return bundle

    def _check_dims(self) -> None:
        """Refuse the bundle (BundleError) when its parts disagree with the manifest: vocabularies, the
        index, and the graph the worker steps (runs.onnx, else step.onnx; step.onnx of a bundle with
        runs.onnx is checked when ``session`` first loads it)."""
        m, problems = self.manifest, []
        if len(self.items) != m.n_items:
            problems.append(f"items.json has {len(self.items)} entries, manifest says n_items={m.n_items}")
        if self.types.ids != m.event_types:
            problems.append(f"event_types.json {self.types.ids} differs from manifest {m.event_types}")
        if m.n_top != min(m.k + m.m, m.n_items - 2):
            problems.append(f"n_top={m.n_top} is not min(k+m, n_items-2)")
        if m.indexed:
            problems += self._index_problems()
        if m.attention < 0 or m.attention > m.m:
            problems.append(f"attention={m.attention} is not within [0, m={m.m}] "
                            "(the window is taken from the seen window)")
        if self.runs is not None:
            problems += self._graph_problems(self.runs, contract.RUNS_FILE, contract.run_inputs(m.attention),
                                             contract.run_outputs(m.indexed))
        else:
            problems += self._step_problems(self._session)
        if problems:
            raise BundleError(f"bundle {self.root} refused: " + "; ".join(problems))

    def _step_problems(self, session: ort.InferenceSession) -> list[str]:
        m = self.manifest
        return self._graph_problems(session, contract.STEP_FILE, contract.inputs(m.attention),
                                    contract.QUERY_OUTPUTS if m.indexed else contract.OUTPUTS)

    def _graph_problems(self, session: ort.InferenceSession, name: str, inputs: tuple[contract.Tensor, ...],
                        outputs: tuple[contract.Tensor, ...]) -> list[str]:
        """A graph's inputs and outputs against the contract: names in order, then every fixed axis size."""
        m = self.manifest
        ins = {i.name: i for i in session.get_inputs()}
        outs = {o.name: o for o in session.get_outputs()}
        in_names, out_names = tuple(t.name for t in inputs), tuple(t.name for t in outputs)
        if tuple(ins) != in_names or tuple(outs) != out_names:
            return [f"{name} inputs/outputs {list(ins)}/{list(outs)} differ from the contract "
                    f"{list(in_names)}/{list(out_names)} (manifest attention={m.attention})"]
        sizes = {"L": m.layers, "H": m.hidden, "N": m.n_top, "Q": m.index.get("dim", 0) - 1, "A": m.attention}
        problems = []
        for t in inputs + outputs:
            shape = (ins.get(t.name) or outs.get(t.name)).shape
            for sym, dim in zip(t.shape, shape):
                if sym in sizes and isinstance(dim, int) and dim != sizes[sym]:
                    problems.append(f"{name}: {t.name} axis {sym} is {dim} in the graph, {sizes[sym]} in the manifest")
        return problems

    @property
    def session(self) -> ort.InferenceSession:
        """step.onnx's session. A bundle with runs.onnx loads it on first use (``step``, the parity and recall
        gates, offline evaluation): the worker steps runs.onnx only, so it holds the item table once."""
        if self._session is None:
            session = _session(self.root / contract.STEP_FILE, self._threads)
            problems = self._step_problems(session)
            if problems:
                raise BundleError(f"bundle {self.root} refused: " + "; ".join(problems))
            self._session = session
        return self._session

    def _index_problems(self) -> list[str]:
        m, problems = self.manifest, []
        d = int(m.index.get("dim", 0))
        if self.table.dtype != np.float32 or self.table.shape != (m.n_items, d):
            problems.append(f"{m.index['table']} is {self.table.dtype} {list(self.table.shape)}, manifest says "
                            f"float32 [{m.n_items}, {d}]")
        if self.index.dim != d or self.index.size != m.n_items - 2:
            problems.append(f"{m.index['file']} holds {self.index.size} vectors of dim {self.index.dim}, manifest "
                            f"says {m.n_items - 2} of dim {d}")
        if int(m.index.get("candidates", 0)) < m.n_top:
            problems.append(f"index candidates {m.index.get('candidates')} < n_top {m.n_top}")
        return problems

    # ---- stepping --------------------------------------------------------------------------
    @property
    def k(self) -> int:
        return self.manifest.k

    @property
    def version(self) -> str:
        return self.manifest.model_version

    def init_state(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        shape = (self.manifest.layers, batch, self.manifest.hidden)
        return np.zeros(shape, np.float32), np.zeros(shape, np.float32)

    @property
    def indexed(self) -> bool:
        return self.manifest.indexed

    @property
    def attention(self) -> int:
        """The size A of the ``window`` input (0: the step takes no window)."""
        return self.manifest.attention

    def feeds(self, item: np.ndarray, event_type: np.ndarray, gap: np.ndarray, h: np.ndarray, c: np.ndarray,
              window: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The graph's inputs by name, in the contract's dtypes. ``window`` [B, A] int64 is required when
        the bundle attends (A = ``attention`` > 0) and refused when it does not (ValueError)."""
        feeds = _arrays(item, event_type, gap, h, c)
        feeds.update(self._window(window, feeds["item"].shape[0]))
        return feeds

    def _window(self, window: np.ndarray | None, rows: int) -> dict[str, np.ndarray]:
        """{"window": [rows, A] int64} for an attention bundle, {} for others; ValueError when it is
        missing, misshapen, or given to a bundle that takes none."""
        a = self.manifest.attention
        if a > 0:
            if window is None:
                raise ValueError(f"this bundle's model attends over the user's last {a} distinct items: pass "
                                 f"window=[B, {a}] int64 (export.contract.windows_of(seen windows, {a}), the seen "
                                 "windows after this event was remembered)")
            window = np.ascontiguousarray(window, dtype=np.int64)
            if window.shape != (rows, a):
                raise ValueError(f"window has shape {list(window.shape)}, expected [{rows}, {a}] "
                                 f"(one row of {a} items per event)")
            return {"window": window}
        if window is not None:
            raise ValueError("this bundle's model does not attend over a window (manifest attention=0): "
                             "pass no window")
        return {}

    def step(self, item: np.ndarray, event_type: np.ndarray, gap: np.ndarray,
             h: np.ndarray, c: np.ndarray, exact: bool = False, window: np.ndarray | None = None) -> StepResult:
        """Step B events; ``exact`` (two-stage bundles) scans the whole item table instead of the index.
        ``window`` [B, A] int64: attention bundles only, and required there (see ``feeds``)."""
        return self._finish(self.session.run(None, self.feeds(item, event_type, gap, h, c, window)), exact)

    def run(self, item: np.ndarray, event_type: np.ndarray, gap: np.ndarray, h: np.ndarray, c: np.ndarray,
            length: np.ndarray, rows: np.ndarray, window: np.ndarray | None = None, exact: bool = False) -> StepResult:
        """Step user b of B through its first ``length[b]`` events of the [B, T] matrices (each >= 1) and
        score the events ``rows`` [R] (b*T + t; serving scores all of them): h/c [L, B, H] after each
        user's last event, top lists [R, N] in ``rows`` order. ``window`` [R, A]: row r's window,
        attention bundles only. One call of runs.onnx; bundles without it step one wave per t."""
        feeds = _arrays(item, event_type, gap, h, c)
        item = feeds["item"]
        length = np.ascontiguousarray(length, dtype=np.int32)
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if item.ndim != 2 or length.shape != item.shape[:1] or rows.ndim != 1:
            raise ValueError(f"run takes [B, T] events, length [B] and rows [R]; got {list(item.shape)}, "
                             f"{list(length.shape)}, {list(rows.shape)}")
        if length.min(initial=1) < 1 or length.max(initial=1) > item.shape[1]:
            raise ValueError(f"every length must be in [1, T={item.shape[1]}]")
        if self.runs is None:
            return self._run_in_waves(item, feeds["event_type"], feeds["gap"], feeds["h"], feeds["c"], length, rows,
                                      window, exact)
        feeds.update(self._window(window, len(rows)), rows=rows, length=length)  # one window row per scored event
        return self._finish(self.runs.run(None, feeds), exact)

    def _run_in_waves(self, item, event_type, gap, h, c, length, rows, window, exact) -> StepResult:
        """``run`` for bundles without runs.onnx: wave t steps every user with more than t events."""
        B, T = item.shape
        at = {int(r): j for j, r in enumerate(rows.tolist())}
        h, c = h.copy(), c.copy()
        n = self.manifest.n_top
        top_i, top_s = np.zeros((len(rows), n), np.int64), np.zeros((len(rows), n), np.float32)
        for t in range(T):
            users = np.flatnonzero(length > t)
            pick = [at.get(int(b) * T + t) for b in users]
            win = None
            if self.manifest.attention > 0:
                if window is None or None in pick:
                    raise ValueError("an attention bundle needs a window for every event it steps: score every "
                                     "event (rows), each with its window")
                win = window[pick]
            out = self.step(item[users, t], event_type[users, t], gap[users, t], h[:, users], c[:, users],
                            exact=exact, window=win)
            h[:, users], c[:, users] = out.h, out.c
            for j, r in enumerate(pick):
                if r is not None:
                    top_i[r], top_s[r] = out.top_items[j], out.top_scores[j]
        return StepResult(h, c, top_i, top_s)

    def _finish(self, outs: list[np.ndarray], exact: bool) -> StepResult:
        """The session's outputs as a StepResult; two-stage bundles look the query up in the index."""
        if not self.indexed:
            return StepResult(*outs)
        h2, c2, q = outs
        q = self.augment(q)
        ti, ts = self.top_exact(q) if exact else self.top_indexed(q)
        return StepResult(h2, c2, ti, ts)

    # ---- two-stage bundles ---------------------------------------------------------------
    @staticmethod
    def augment(q: np.ndarray) -> np.ndarray:
        """[q, 1]: one inner product with a table row [v, b] is the score q.v + b."""
        out = np.ones((q.shape[0], q.shape[1] + 1), np.float32)
        out[:, :-1] = q
        return out

    def top_indexed(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidates from the index, re-scored exactly against the item table: top n_top, best first."""
        cand = self.index.search(q, int(self.manifest.index["candidates"]))
        missing = cand < 0
        rows = self.table[np.where(missing, 0, cand)]  # [B, n, Q+1]
        scores = np.matmul(rows, q[:, :, None])[:, :, 0]
        if missing.any():
            scores[missing] = -np.inf
        ti, ts = _best(cand, scores, self.manifest.n_top)
        short = (ti < 0).any(axis=1)
        if short.any():  # the index found fewer than n_top items (e.g. IVF lists too small): scan those rows
            ti[short], ts[short] = self.top_exact(q[short])
            self.full_scan_rows += int(short.sum())
        return ti, ts

    def top_exact(self, q: np.ndarray, rows: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """The whole item table scanned (PAD and OOV excluded): the reference for the index. ``rows``
        queries at a time (a [rows, n_items] score matrix: 128 MB at 1M items)."""
        n, table = self.manifest.n_top, self.table[2:]
        top_i = np.empty((q.shape[0], n), np.int64)
        top_s = np.empty((q.shape[0], n), np.float32)
        for a in range(0, q.shape[0], rows):
            scores = q[a:a + rows] @ table.T
            keep = (np.argpartition(-scores, n - 1, axis=1)[:, :n] if n < scores.shape[1]
                    else np.argsort(-scores, axis=1))
            top_i[a:a + rows], top_s[a:a + rows] = _best(keep + 2, np.take_along_axis(scores, keep, 1), n)
        return top_i, top_s


def _arrays(item, event_type, gap, h, c) -> dict[str, np.ndarray]:
    """The event and state inputs in the contract's dtypes, contiguous (both graphs take them by these names)."""
    return {"item": np.ascontiguousarray(item, dtype=np.int64),
            "event_type": np.ascontiguousarray(event_type, dtype=np.int64),
            "gap": np.ascontiguousarray(gap, dtype=np.int64),
            "h": np.ascontiguousarray(h, dtype=np.float32),
            "c": np.ascontiguousarray(c, dtype=np.float32)}


def _session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _best(ids: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best of each row, best first; equal scores by lower item id (as the graph's TopK)."""
    if ids.shape[0] == 1:  # the worker's common case: no per-row loop
        order = np.lexsort((ids[0], -scores[0]))[:n]
        return ids[:, order], scores[:, order]
    top_i = np.empty((ids.shape[0], n), np.int64)
    top_s = np.empty((ids.shape[0], n), np.float32)
    for r in range(ids.shape[0]):
        order = np.lexsort((ids[r], -scores[r]))[:n]
        top_i[r], top_s[r] = ids[r, order], scores[r, order]
    return top_i, top_s
