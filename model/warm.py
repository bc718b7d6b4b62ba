"""Incremental retraining: a model for a grown vocabulary that starts from an earlier one's weights.

``streamrec train --init-from DIR`` continues from a checkpoint on newer data. The item (and event
type) vocabulary is the checkpoint's extended with the new ids (``Vocab.extended``): every
existing id keeps its index, so its rows in the item tables are copied as they are, and the new
ids get the fresh rows of a newly initialised model. Every other weight is copied; the model's
shape (dim, hidden, layers, ...) is the checkpoint's.
"""
from __future__ import annotations

import torch

from streamrec.model.lstm import LSTMConfig, LSTMRecommender

#: Parameters and buffers with one row per item / per event type (grown, not copied whole).
ITEM_ROWS = ("item_emb.weight", "fo_in.weight", "fo_out.weight", "bias", "succ_idx", "succ_cnt")
TYPE_ROWS = ("type_emb.weight",)


def require_extension(old, new, what: str) -> None:
    """Refuse a vocabulary ``new`` that is not ``old`` plus new ids (``Vocab.extends``): the earlier
    model's rows would then belong to other ids. ``streamrec train --init-from`` builds the new one
    by extension; this keeps any other path to ``grow`` from mixing up rows silently."""
    if not new.extends(old):
        n = len(old.ids)
        moved = next((i for i, (a, b) in enumerate(zip(old.ids, new.ids[:n])) if a != b), min(n, len(new.ids)))
        found = new.ids[moved] if moved < len(new.ids) else "nothing"
        raise ValueError(f"the {what} vocabulary is not an extension of the checkpoint's: its id #{moved + 1} is "
                         f"{found!r}, the checkpoint's {old.ids[moved]!r} (an incremental model keeps every earlier "
                         "id at its index and only adds ids after them)")


def grown_config(old: LSTMConfig, n_items: int, n_event_types: int) -> LSTMConfig:
    """The earlier model's config for the grown vocabularies (refuses a shrunk one)."""
    if n_items < old.n_items or n_event_types < old.n_event_types:
        raise ValueError(f"the vocabularies shrank ({old.n_items} -> {n_items} items, {old.n_event_types} -> "
                         f"{n_event_types} event types): an incremental model only adds ids")
    return LSTMConfig(**{**old.to_dict(), "n_items": n_items, "n_event_types": n_event_types})


def grow(old: LSTMRecommender, fresh: LSTMRecommender) -> LSTMRecommender:
    """Copy ``old``'s weights into ``fresh`` (a new model of ``grown_config``) in place: whole tensors,
    and the first rows of the per-item / per-type ones (the rest keep ``fresh``'s initialisation)."""
    theirs = old.state_dict()
    mine = fresh.state_dict()
    if set(theirs) != set(mine):
        raise ValueError(f"the models differ in their parts: {sorted(set(theirs) ^ set(mine))}")
    with torch.no_grad():
        for name, target in mine.items():
            source = theirs[name]
            if source.shape == target.shape:
                target.copy_(source)
            elif name in ITEM_ROWS + TYPE_ROWS and source.shape[1:] == target.shape[1:] \
                    and source.shape[0] <= target.shape[0]:
                target[:source.shape[0]].copy_(source)
            else:
                raise ValueError(f"cannot continue from the checkpoint: {name} is {tuple(source.shape)} there, "
                                 f"{tuple(target.shape)} here")
    return fresh
