"""Load an artifact bundle and step it with ONNX Runtime (numpy + onnxruntime only).

Importing this module never imports torch; the streaming worker depends on that.

    bundle = Bundle.load("bundles/m1")          # verifies checksums and dims, or BundleError
    h, c = bundle.init_state(batch=4)
    out = bundle.step(items, types, gaps, h, c)  # out.h, out.c, out.top_items, out.top_scores
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
    top_items: np.ndarray  # [B, N] int64 item indices, best first
    top_scores: np.ndarray  # [B, N] float32


class Bundle:
    """A verified bundle: manifest, vocabularies and an ONNX Runtime session for the step."""

    def __init__(self, root: Path, manifest: Manifest, items: Vocab, types: Vocab,
                 session: ort.InferenceSession):
        self.root, self.manifest, self.items, self.types, self.session = root, manifest, items, types, session

    @classmethod
    def load(cls, path: str | os.PathLike[str], threads: int = 1) -> Bundle:
        root = Path(path)
        mpath = root / contract.MANIFEST_FILE
        if not mpath.is_file():
            raise BundleError(f"{root} is not a bundle: no {contract.MANIFEST_FILE} "
                              f"(make one with: streamrec export --model DIR --out {root})")
        manifest = Manifest.from_json(mpath.read_text(encoding="utf-8"))
        missing = {contract.STEP_FILE, contract.ITEMS_FILE, contract.TYPES_FILE} - set(manifest.files)
        if missing:
            raise BundleError(f"bundle {root} refused: manifest lists no checksum for {sorted(missing)}")
        verify_files(root, manifest)
        items = Vocab.load(root / contract.ITEMS_FILE)
        types = Vocab.load(root / contract.TYPES_FILE)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(root / contract.STEP_FILE), opts, providers=["CPUExecutionProvider"])
        bundle = cls(root, manifest, items, types, session)
        bundle._check_dims()
        return bundle

    def _check_dims(self) -> None:
        m, problems = self.manifest, []
        if len(self.items) != m.n_items:
            problems.append(f"items.json has {len(self.items)} entries, manifest says n_items={m.n_items}")
        if self.types.ids != m.event_types:
            problems.append(f"event_types.json {self.types.ids} differs from manifest {m.event_types}")
        if m.n_top != min(m.k + m.m, m.n_items - 2):
            problems.append(f"n_top={m.n_top} is not min(k+m, n_items-2)")
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = {o.name: o for o in self.session.get_outputs()}
        if tuple(ins) != contract.INPUT_NAMES or tuple(outs) != contract.OUTPUT_NAMES:
            problems.append(f"graph inputs/outputs {list(ins)}/{list(outs)} differ from the contract "
                            f"{list(contract.INPUT_NAMES)}/{list(contract.OUTPUT_NAMES)}")
        else:
            sizes = {"L": m.layers, "H": m.hidden, "N": m.n_top}
            for t in contract.INPUTS + contract.OUTPUTS:
                shape = (ins.get(t.name) or outs.get(t.name)).shape
                for sym, dim in zip(t.shape, shape):
                    if sym in sizes and isinstance(dim, int) and dim != sizes[sym]:
                        problems.append(f"{t.name} axis {sym} is {dim} in the graph, {sizes[sym]} in the manifest")
        if problems:
            raise BundleError(f"bundle {self.root} refused: " + "; ".join(problems))

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

    def step(self, item: np.ndarray, event_type: np.ndarray, gap: np.ndarray,
             h: np.ndarray, c: np.ndarray) -> StepResult:
        feeds = {"item": np.ascontiguousarray(item, dtype=np.int64),
                 "event_type": np.ascontiguousarray(event_type, dtype=np.int64),
                 "gap": np.ascontiguousarray(gap, dtype=np.int64),
                 "h": np.ascontiguousarray(h, dtype=np.float32),
                 "c": np.ascontiguousarray(c, dtype=np.float32)}
        h2, c2, ti, ts = self.session.run(list(contract.OUTPUT_NAMES), feeds)
        return StepResult(h2, c2, ti, ts)
