"""Checkpoint -> artifact bundle: ``step.onnx``, ``runs.onnx`` + vocabularies + ``manifest.json``.

``streamrec export --model DIR --out BUNDLE``. The bundle is written to a temporary folder,
validated for parity against the PyTorch model (export/parity.py) and only then moved to
BUNDLE: a failed parity check leaves nothing usable behind, only the mismatch report.
``--index KIND`` (export/ann.py) writes a two-stage bundle instead: the graph outputs the scoring
vector, and the item table and its index go beside it; parity then checks the graph against
PyTorch through the exact table scan, and a recall gate (export/recall.py) checks the index
against that scan on states stepped from real recorded histories.
A model with attention over the recent-items window (``LSTMConfig.attention`` = A) exports a step
with one more input, ``window`` [B, A] (export/contract.py), and the manifest records A; A must not
exceed the bundle's seen window m, which is where serving takes the window from.
``runs.onnx`` steps many events per user in one call (the contract's runs graph); the parity gate
requires it to equal step.onnx bit for bit.
Torch side: imports torch; the runtime side (export/runtime.py) does not.
"""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from streamrec.export import ann, contract
from streamrec.export.manifest import Manifest, sha256_file
from streamrec.model.checkpoint import Checkpoint
from streamrec.model.gaps import __doc__ as GAP_DOC
from streamrec.model.lstm import LSTMRecommender


def reserved_slots(n_items: int) -> torch.Tensor:
    """Added to the scores before the in-graph TopK: -inf at PAD (0) and OOV (1), never recommended."""
    reserved = torch.zeros(n_items)
    reserved[:2] = float("-inf")
    return reserved


def freeze_scoring(graph: nn.Module, model: LSTMRecommender) -> LSTMRecommender:
    """The model as ``graph`` exports it. Cosine models: a shallow copy (every weight shared) whose
    ``scoring_table`` is the unit-row table computed once here, held as ``graph``'s buffer
    ``scoring_table``, so the graph does not normalize the catalog at every call (the same values:
    the same function computed it). Other models: the model itself (their graphs are unchanged)."""
    if model.cfg.cosine <= 0:
        return model
    with torch.no_grad():
        graph.register_buffer("scoring_table", model.scoring_table().detach().clone())
    frozen = copy.copy(model)
    frozen.scoring_table = lambda: graph.scoring_table
    return frozen


class StepGraph(nn.Module):
    """The model's own ``step`` plus the in-graph TopK over the catalog (PAD/OOV excluded)."""

    def __init__(self, model: LSTMRecommender, n_top: int):
        super().__init__()
        self.model, self.n_top = freeze_scoring(self, model), n_top
        self.register_buffer("reserved", reserved_slots(model.cfg.n_items))

    def forward(self, item, event_type, gap, h, c, window=None):
        h2, c2, scores = self.model.step(item, event_type, gap, h, c, window)
        top_scores, top_items = torch.topk(scores + self.reserved, self.n_top, dim=1)
        return h2, c2, top_items, top_scores


def refuse_indexed_transitions(model: LSTMRecommender) -> None:
    """An indexed (two-stage) graph outputs a vector to search with; a transition prior's scores are not an
    inner product with it, so such a model is refused with a clear error."""
    if model.cfg.transitions > 0:
        raise ValueError("an item index cannot serve a model with a transition prior (--transitions): "
                         "its scores are not an inner product; export it without --index")


class QueryGraph(nn.Module):
    """The model's own ``step`` with its scoring replaced by the scoring vector it would score with
    (cosine models: the scaled unit vector), for two-stage bundles: outputs (h, c, query)."""

    def __init__(self, model: LSTMRecommender):
        super().__init__()
        refuse_indexed_transitions(model)
        self.model = copy.copy(model)  # shares every weight; only ``score`` differs
        self.model.score = self._query

    def _query(self, q, items):
        return self.model.scale_query(q)  # what the index searches with

    def forward(self, item, event_type, gap, h, c, window=None):
        return self.model.step(item, event_type, gap, h, c, window)


class RunGraph(nn.Module):
    """B users' runs of up to T events in one call (export/contract.py): the model's own fused
    ``nn.LSTM`` over [B, T] (one ONNX ``LSTM`` node, which loops over the steps natively; the
    ``length`` input is spliced in after export), then the step's head on the scored rows only: the
    top list (``StepGraph``) or, with ``query``, the scoring vector (``QueryGraph``)."""

    def __init__(self, model: LSTMRecommender, n_top: int, query: bool = False):
        super().__init__()
        if query:
            refuse_indexed_transitions(model)
        self.model, self.n_top, self.query = model if query else freeze_scoring(self, model), n_top, query
        self.register_buffer("reserved", reserved_slots(model.cfg.n_items))

    def forward(self, item, event_type, gap, h, c, rows, window=None):
        m = self.model
        out, (h2, c2) = m.lstm(m._embed(item, event_type, gap), (h, c))
        o = out.reshape(-1, out.shape[-1]).index_select(0, rows)
        it = item.reshape(-1).index_select(0, rows)
        q = m.query(o, it, window)
        if self.query:
            return h2, c2, m.scale_query(q)
        top_scores, top_items = torch.topk(m.score(q, it) + self.reserved, self.n_top, dim=1)
        return h2, c2, top_items, top_scores


def export_runs_onnx(model: LSTMRecommender, path: Path, n_top: int, query: bool = False) -> None:
    """Write the runs graph: ``RunGraph`` traced at B=2, T=3, then every ``LSTM`` node given the
    ``length`` input (torch exports nn.LSTM without sequence lengths; ONNX Runtime then stops each
    user's recurrence at its own length, and h_out/c_out are each user's state after its last event)."""
    import onnx
    from onnx import TensorProto, helper

    cfg = model.cfg
    b, t = 2, 3
    attention = attention_of(model)
    args = (torch.ones(b, t, dtype=torch.int64), torch.ones(b, t, dtype=torch.int64),
            torch.zeros(b, t, dtype=torch.int64), torch.zeros(cfg.layers, b, cfg.hidden),
            torch.zeros(cfg.layers, b, cfg.hidden), torch.arange(b * t, dtype=torch.int64))
    if attention > 0:
        args += (torch.arange(b * t * attention, dtype=torch.int64).reshape(b * t, attention) % cfg.n_items,)
    names = [x.name for x in contract.run_inputs(attention)][:-1]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(RunGraph(model.eval(), n_top, query).eval(), args, str(path), dynamo=False,
                          opset_version=contract.OPSET, input_names=names,
                          output_names=[x.name for x in contract.run_outputs(query)],
                          dynamic_axes=contract.run_dynamic_axes(attention, query), do_constant_folding=True)
    graph = onnx.load(str(path))
    lstms = [n for n in graph.graph.node if n.op_type == "LSTM"]
    if len(lstms) != cfg.layers:
        raise RuntimeError(f"the runs graph has {len(lstms)} LSTM nodes for {cfg.layers} layers "
                           "(torch's export changed?)")
    length = contract.RUN_LENGTH
    graph.graph.input.append(helper.make_tensor_value_info(length.name, TensorProto.INT32, ["B"]))
    for node in lstms:  # inputs: X, W, R, B, sequence_lens, initial_h, initial_c
        ins = list(node.input) + [""] * (7 - len(node.input))
        ins[4] = length.name
        del node.input[:]
        node.input.extend(ins)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))


def item_table(model: LSTMRecommender) -> "np.ndarray":
    """The augmented scoring table [n_items, Q+1] float32: item vectors (unit rows for cosine models) and
    the item bias as the last column, so [q, 1] . row = the model's score."""
    import numpy as np

    with torch.no_grad():
        v = model.scoring_table().detach().float()
        b = model.bias.detach().float() if model.bias is not None else torch.zeros(v.shape[0])
        return np.ascontiguousarray(torch.cat([v, b[:, None]], dim=1).numpy(), dtype=np.float32)


def export_onnx(model: LSTMRecommender, path: Path, n_top: int, query: bool = False) -> None:
    graph = (QueryGraph(model.eval()) if query else StepGraph(model.eval(), n_top)).eval()
    outputs = contract.QUERY_OUTPUTS if query else contract.OUTPUTS
    cfg = model.cfg
    b = 2
    attention = attention_of(model)
    args = (torch.ones(b, dtype=torch.int64), torch.ones(b, dtype=torch.int64), torch.zeros(b, dtype=torch.int64),
            torch.zeros(cfg.layers, b, cfg.hidden), torch.zeros(cfg.layers, b, cfg.hidden))
    if attention > 0:  # a window with PAD, OOV and items in it: every branch of the masking is traced
        args += (torch.arange(b * attention, dtype=torch.int64).reshape(b, attention) % cfg.n_items,)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, args, str(path), dynamo=False, opset_version=contract.OPSET,
                          input_names=list(contract.input_names(attention)), output_names=[t.name for t in outputs],
                          dynamic_axes=contract.dynamic_axes(outputs, attention), do_constant_folding=True)


def attention_of(model: LSTMRecommender) -> int:
    """The model's recent-items window size A (0: no attention; checkpoints older than the option)."""
    return int(getattr(model.cfg, "attention", 0) or 0)


def check_attention(model: LSTMRecommender, m: int) -> None:
    """Refuse a bundle whose seen window m is smaller than the model's attention window: serving builds
    the step's window from the seen window, so it could never fill the A slots the model was trained on."""
    a = attention_of(model)
    if a > m:
        raise ValueError(f"this checkpoint attends over the last {a} distinct items (attention={a}), but the bundle's "
                         f"seen window is m={m}: serving takes the attention window from the seen window, so m must be "
                         f">= {a}; export with --m {a} or more")


def write_index(model: LSTMRecommender, out: Path, spec: ann.IndexSpec, n_top: int, threads: int = 0) -> dict:
    """item_table.npy and the index file into ``out``; returns the manifest's ``index`` entry."""
    import numpy as np

    table = item_table(model)
    np.save(out / contract.TABLE_FILE, table, allow_pickle=False)
    params = spec.resolved(table.shape[0] - 2)
    candidates = max(spec.candidates or n_top, n_top)
    if spec.kind == "hnsw":
        params["ef_search"] = max(params["ef_search"], candidates)
    ann.build(table, spec.kind, params, out / contract.INDEX_FILE, threads)
    return {"kind": spec.kind, "library": ann.LIBRARY, "library_version": ann.library_version(),
            "file": contract.INDEX_FILE, "table": contract.TABLE_FILE, "dim": int(table.shape[1]),
            "params": params, "candidates": candidates}


def write_bundle(ckpt: Checkpoint, out: Path, k: int, m: int, model_id: str | None = None,
                 index: ann.IndexSpec | None = None) -> Manifest:
    """Write step.onnx, runs.onnx, vocabularies and manifest into ``out`` (an empty folder); with ``index``, the
    query graph, the item table and the index (a two-stage bundle)."""
    cfg = ckpt.model.cfg
    n_top = min(k + m, cfg.n_items - 2)
    export_onnx(ckpt.model, out / contract.STEP_FILE, n_top, query=index is not None)
    export_runs_onnx(ckpt.model, out / contract.RUNS_FILE, n_top, query=index is not None)
    ckpt.items.save(out / contract.ITEMS_FILE)
    ckpt.types.save(out / contract.TYPES_FILE)
    names = [contract.STEP_FILE, contract.RUNS_FILE, contract.ITEMS_FILE, contract.TYPES_FILE]
    entry = {}
    if index is not None:
        entry = write_index(ckpt.model, out, index, n_top)
        names += [contract.TABLE_FILE, contract.INDEX_FILE]
    files = {name: sha256_file(out / name) for name in names}
    content = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]
    model_id = model_id or f"lstm-{ckpt.data.get('name', 'model')}"
    manifest = Manifest(
        model_id=model_id, model_version=f"{model_id}-{content}",
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        layers=cfg.layers, hidden=cfg.hidden, dim=cfg.dim, n_items=cfg.n_items, k=k, m=m, n_top=n_top,
        event_types=ckpt.types.ids, n_gap_buckets=cfg.n_gap_buckets,
        gap_rule=" ".join(GAP_DOC.split("\n\n")[1].split()), opset=contract.OPSET,
        metrics=ckpt.metrics, training={"config": cfg.to_dict(), "train": ckpt.train_config, "data": ckpt.data},
        files=files, index=entry, attention=attention_of(ckpt.model),
    )
    (out / contract.MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def export_bundle(ckpt: Checkpoint, out_dir: str | Path, k: int = 20, m: int = 50,
                  parity_sequences: list | None = None, model_id: str | None = None,
                  index: ann.IndexSpec | None = None, min_recall: float | None = None,
                  recall_sequences: list | None = None):
    """Export, check parity (and, with ``index``, recall), then move into place. Returns (manifest,
    parity report), the manifest holding the recall measured.

    Raises ParityError (with the full report) when the ONNX step does not reproduce the model,
    RecallError when the index's recall@10 is below ``min_recall`` (default 0.95), and ValueError,
    before writing anything, for a model attending over more items than the seen window ``m`` holds.
    """
    from dataclasses import replace

    from streamrec.export.parity import ParityError, check_parity  # torch-side validation
    from streamrec.export.recall import MIN_RECALL_AT_10, RecallError, measure

    out = Path(out_dir)
    check_attention(ckpt.model, m)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose another --out or remove it")
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out.parent if out.parent.exists() else None))
    try:
        # (``index`` passed only when set: write_bundle's older signature stays callable as is)
        manifest = write_bundle(ckpt, tmp, k, m, model_id, **({"index": index} if index else {}))
        report = check_parity(ckpt, tmp, parity_sequences)
        if not report.ok:
            raise ParityError(report)
        if index is not None:
            from streamrec.export.runtime import Bundle

            seqs = recall_sequences or parity_sequences or ckpt.data.get("parity_sample")
            rec = measure(Bundle.load(tmp), seqs, MIN_RECALL_AT_10 if min_recall is None else min_recall)
            if not rec.ok:
                raise RecallError(rec)
            manifest = replace(manifest, index={**manifest.index, "recall": rec.to_dict()})
            (tmp / contract.MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
        if out.exists():
            out.rmdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tmp), str(out))
        return manifest, report
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
