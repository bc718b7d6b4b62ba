"""Checkpoint -> artifact bundle: ``step.onnx`` + vocabularies + ``manifest.json``.

``streamrec export --model DIR --out BUNDLE``. The bundle is written to a temporary folder,
validated for parity against the PyTorch model (export/parity.py) and only then moved to
BUNDLE: a failed parity check leaves nothing usable behind, only the mismatch report.
Torch side: imports torch; the runtime side (export/runtime.py) does not.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from streamrec.export import contract
from streamrec.export.manifest import Manifest, sha256_file
from streamrec.model.checkpoint import Checkpoint
from streamrec.model.gaps import __doc__ as GAP_DOC
from streamrec.model.lstm import LSTMRecommender


class StepGraph(nn.Module):
    """The model's own ``step`` plus the in-graph TopK over the catalog (PAD/OOV excluded)."""

    def __init__(self, model: LSTMRecommender, n_top: int):
        super().__init__()
        self.model, self.n_top = model, n_top
        reserved = torch.zeros(model.cfg.n_items)
        reserved[:2] = float("-inf")
        self.register_buffer("reserved", reserved)

    def forward(self, item, event_type, gap, h, c):
        h2, c2, scores = self.model.step(item, event_type, gap, h, c)
        top_scores, top_items = torch.topk(scores + self.reserved, self.n_top, dim=1)
        return h2, c2, top_items, top_scores


def export_onnx(model: LSTMRecommender, path: Path, n_top: int) -> None:
    graph = StepGraph(model.eval(), n_top).eval()
    cfg = model.cfg
    b = 2
    args = (torch.ones(b, dtype=torch.int64), torch.ones(b, dtype=torch.int64), torch.zeros(b, dtype=torch.int64),
            torch.zeros(cfg.layers, b, cfg.hidden), torch.zeros(cfg.layers, b, cfg.hidden))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, args, str(path), dynamo=False, opset_version=contract.OPSET,
                          input_names=list(contract.INPUT_NAMES), output_names=list(contract.OUTPUT_NAMES),
                          dynamic_axes=contract.dynamic_axes(), do_constant_folding=True)


def write_bundle(ckpt: Checkpoint, out: Path, k: int, m: int, model_id: str | None = None) -> Manifest:
    """Write step.onnx, vocabularies and manifest into ``out`` (an empty folder)."""
    cfg = ckpt.model.cfg
    n_top = min(k + m, cfg.n_items - 2)
    export_onnx(ckpt.model, out / contract.STEP_FILE, n_top)
    ckpt.items.save(out / contract.ITEMS_FILE)
    ckpt.types.save(out / contract.TYPES_FILE)
    files = {name: sha256_file(out / name) for name in (contract.STEP_FILE, contract.ITEMS_FILE, contract.TYPES_FILE)}
    content = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]
    model_id = model_id or f"lstm-{ckpt.data.get('name', 'model')}"
    manifest = Manifest(
        model_id=model_id, model_version=f"{model_id}-{content}",
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        layers=cfg.layers, hidden=cfg.hidden, dim=cfg.dim, n_items=cfg.n_items, k=k, m=m, n_top=n_top,
        event_types=ckpt.types.ids, n_gap_buckets=cfg.n_gap_buckets,
        gap_rule=" ".join(GAP_DOC.split("\n\n")[1].split()), opset=contract.OPSET,
        metrics=ckpt.metrics, training={"config": cfg.to_dict(), "train": ckpt.train_config, "data": ckpt.data},
        files=files,
    )
    (out / contract.MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def export_bundle(ckpt: Checkpoint, out_dir: str | Path, k: int = 20, m: int = 50,
                  parity_sequences: list | None = None, model_id: str | None = None):
    """Export, check parity, then move into place. Returns (manifest, parity report).

    Raises ParityError (with the full report) when the ONNX step does not reproduce the model.
    """
    from streamrec.export.parity import ParityError, check_parity  # torch-side validation

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose another --out or remove it")
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out.parent if out.parent.exists() else None))
    try:
        manifest = write_bundle(ckpt, tmp, k, m, model_id)
        report = check_parity(ckpt, tmp, parity_sequences)
        if not report.ok:
            raise ParityError(report)
        if out.exists():
            out.rmdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tmp), str(out))
        return manifest, report
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
