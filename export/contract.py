"""The ONNX step contract, declared once: read by export, the runtime and validation.

One call steps a batch of B events (one per user) through the LSTM:
  inputs   item [B] int64, event_type [B] int64, gap [B] int64, h [L,B,H] float32, c [L,B,H] float32
  outputs  h_out [L,B,H], c_out [L,B,H], top_items [B,N] int64, top_scores [B,N] float32
with N = k + m (m = the seen-items window, so serving can drop already-seen items and still
return k). The PAD and OOV slots are never in the top list. The batch axis is dynamic.

A bundle whose model attends over the recent-items window (``manifest.attention`` = A > 0,
``LSTMConfig.attention``) takes one more input, last:
  inputs   ... window [B,A] int64
the user's last A distinct known items after this event, oldest first, PAD 0 on the left: the
newest A entries of the serving seen window once this event is remembered in it
(``windows_of``). A <= m, so the seen window always holds them.

The runs graph (``runs.onnx``, bundles exported since it exists) steps B users through up to T
events each in one call, the LSTM as one ONNX ``LSTM`` node that loops over the steps natively:
  inputs   item [B,T] int64, event_type [B,T] int64, gap [B,T] int64, h [L,B,H], c [L,B,H],
           length [B] int32 (events of each user, >= 1; the rest of its row is padding),
           rows [R] int64 (the events to score, as b*T + t, in any order)
           ... window [R,A] int64 (attention bundles: row r's window)
  outputs  h_out [L,B,H], c_out [L,B,H] (each user's state after its last event),
           top_items [R,N], top_scores [R,N] (or query [R,Q]: indexed bundles), one row per ``rows``
The export gate requires its outputs to equal step.onnx's, stepped event by event, bit for bit,
so a runtime may serve either and get the same recommendations (export/parity.py).

An indexed bundle (``streamrec export --index KIND``, export/ann.py) has the same inputs, and
its graph outputs the scoring vector instead of the top list:
  outputs  h_out [L,B,H], c_out [L,B,H], query [B,Q] float32
The runtime appends 1 to the query, asks the item index for candidates, re-scores them exactly
against ``item_table.npy`` ([n_items, Q+1] float32: item vector and bias) and returns the same
top_items / top_scores as the full scan would. Torch-free.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

OPSET = 17
STEP_FILE = "step.onnx"
ITEMS_FILE = "items.json"
TYPES_FILE = "event_types.json"
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "items.faiss"  # indexed bundles only
TABLE_FILE = "item_table.npy"  # indexed bundles only
RUNS_FILE = "runs.onnx"  # the runs graph (optional: older bundles have only step.onnx)


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # numpy dtype name
    shape: tuple[str, ...]  # symbolic: B (dynamic batch), L (layers), H (hidden), N (top), A (attention)
    atol: float = 0.0  # parity tolerance, outputs only


INPUTS = (
    Tensor("item", "int64", ("B",)),
    Tensor("event_type", "int64", ("B",)),
    Tensor("gap", "int64", ("B",)),
    Tensor("h", "float32", ("L", "B", "H")),
    Tensor("c", "float32", ("L", "B", "H")),
)
OUTPUTS = (
    Tensor("h_out", "float32", ("L", "B", "H"), atol=1e-5),
    Tensor("c_out", "float32", ("L", "B", "H"), atol=1e-5),
    Tensor("top_items", "int64", ("B", "N")),
    Tensor("top_scores", "float32", ("B", "N"), atol=1e-4),
)
WINDOW = Tensor("window", "int64", ("B", "A"))  # attention bundles only, after INPUTS
QUERY_OUTPUTS = OUTPUTS[:2] + (Tensor("query", "float32", ("B", "Q"), atol=1e-4),)
INPUT_NAMES = tuple(t.name for t in INPUTS)
QUERY_OUTPUT_NAMES = tuple(t.name for t in QUERY_OUTPUTS)
OUTPUT_NAMES = tuple(t.name for t in OUTPUTS)
TOLERANCE = {t.name: t.atol for t in OUTPUTS}
SCORE_ATOL = TOLERANCE["top_scores"]
STATE_ATOL = TOLERANCE["h_out"]


def inputs(attention: int = 0) -> tuple[Tensor, ...]:
    """The graph's inputs, in order: INPUTS, then ``window`` when the model attends (attention > 0)."""
    return INPUTS + (WINDOW,) if attention > 0 else INPUTS


def input_names(attention: int = 0) -> tuple[str, ...]:
    return tuple(t.name for t in inputs(attention))


def dynamic_axes(outputs: tuple[Tensor, ...] = OUTPUTS, attention: int = 0) -> dict[str, dict[int, str]]:
    """Every tensor's B axis is dynamic."""
    return {t.name: {t.shape.index("B"): "batch"} for t in inputs(attention) + outputs}


RUN_INPUTS = (
    Tensor("item", "int64", ("B", "T")),
    Tensor("event_type", "int64", ("B", "T")),
    Tensor("gap", "int64", ("B", "T")),
    Tensor("h", "float32", ("L", "B", "H")),
    Tensor("c", "float32", ("L", "B", "H")),
    Tensor("rows", "int64", ("R",)),
)
RUN_LENGTH = Tensor("length", "int32", ("B",))  # spliced into the graph after export (see onnx_export)
RUN_WINDOW = Tensor("window", "int64", ("R", "A"))


def run_inputs(attention: int = 0) -> tuple[Tensor, ...]:
    """The runs graph's inputs, in order: RUN_INPUTS, ``window`` when the model attends, then ``length``."""
    return RUN_INPUTS + ((RUN_WINDOW,) if attention > 0 else ()) + (RUN_LENGTH,)


def run_outputs(query: bool = False) -> tuple[Tensor, ...]:
    """The runs graph's outputs: states per user (B), top list or query per scored row (R)."""
    per_row = QUERY_OUTPUTS[2:] if query else OUTPUTS[2:]
    return OUTPUTS[:2] + tuple(Tensor(t.name, t.dtype, ("R",) + t.shape[1:], t.atol) for t in per_row)


def run_dynamic_axes(attention: int = 0, query: bool = False) -> dict[str, dict[int, str]]:
    """Every B, T and R axis is dynamic (``length`` is added after export)."""
    tensors = run_inputs(attention)[:-1] + run_outputs(query)
    return {t.name: {i: s for i, s in enumerate(t.shape) if s in ("B", "T", "R")} for t in tensors}


def remember(window: tuple[int, ...], value: int, size: int) -> tuple[int, ...]:
    """``window`` (distinct values) with ``value`` moved (or added) to the newest end, keeping the last
    ``size``."""
    if size <= 0:
        return ()
    kept = list(window)
    if value in kept:
        kept.remove(value)
    kept.append(value)
    return tuple(kept[-size:])


def window_of(seen: Sequence[int], n: int) -> list[int]:
    """The ``window`` row [n] of one user: the newest ``n`` entries of ``seen`` (the serving seen
    window, oldest first, as ``UserState.seen`` stores it, after this event was remembered), left-padded
    with PAD 0 to length n. ``seen`` holds known items only (> OOV), so every slot is an item or PAD."""
    return windows_of([seen], n)[0].tolist()


def windows_of(seens: Sequence[Sequence[int]], n: int) -> np.ndarray:
    """``window_of`` for a batch: [len(seens), n] int64, row b from ``seens[b]``."""
    if n < 0:
        raise ValueError(f"window size must be >= 0, got {n}")
    out = np.zeros((len(seens), n), np.int64)
    for b, seen in enumerate(seens):
        tail = seen[len(seen) - n:] if len(seen) > n else seen
        if len(tail):
            out[b, n - len(tail):] = tail
    return out
