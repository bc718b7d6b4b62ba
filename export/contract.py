"""The ONNX step contract, declared once: read by export, the runtime and validation.

One call steps a batch of B events (one per user) through the LSTM:
  inputs   item [B] int64, event_type [B] int64, gap [B] int64, h [L,B,H] float32, c [L,B,H] float32
  outputs  h_out [L,B,H], c_out [L,B,H], top_items [B,N] int64, top_scores [B,N] float32
with N = k + m (m = the seen-items window, so serving can drop already-seen items and still
return k). The PAD and OOV slots are never in the top list. The batch axis is dynamic.

An indexed bundle (``streamrec export --index KIND``, export/ann.py) has the same inputs, and
its graph outputs the scoring vector instead of the top list:
  outputs  h_out [L,B,H], c_out [L,B,H], query [B,Q] float32
The runtime appends 1 to the query, asks the item index for candidates, re-scores them exactly
against ``item_table.npy`` ([n_items, Q+1] float32: item vector and bias) and returns the same
top_items / top_scores as the full scan would. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass

OPSET = 17
STEP_FILE = "step.onnx"
ITEMS_FILE = "items.json"
TYPES_FILE = "event_types.json"
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "items.faiss"  # indexed bundles only
TABLE_FILE = "item_table.npy"  # indexed bundles only


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # numpy dtype name
    shape: tuple[str, ...]  # symbolic: B (dynamic batch), L (layers), H (hidden), N (top)
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
QUERY_OUTPUTS = OUTPUTS[:2] + (Tensor("query", "float32", ("B", "Q"), atol=1e-4),)
INPUT_NAMES = tuple(t.name for t in INPUTS)
QUERY_OUTPUT_NAMES = tuple(t.name for t in QUERY_OUTPUTS)
OUTPUT_NAMES = tuple(t.name for t in OUTPUTS)
TOLERANCE = {t.name: t.atol for t in OUTPUTS}
SCORE_ATOL = TOLERANCE["top_scores"]
STATE_ATOL = TOLERANCE["h_out"]


def dynamic_axes(outputs: tuple[Tensor, ...] = OUTPUTS) -> dict[str, dict[int, str]]:
    """Every tensor's B axis is dynamic."""
    return {t.name: {t.shape.index("B"): "batch"} for t in INPUTS + outputs}
