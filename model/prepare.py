"""From a data set on disk to everything training and evaluation need (torch-free).

``prepare(events, protocol)`` splits, builds the vocabularies from training data only, encodes
every user's history and builds the validation and test target sets.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from streamrec.model.encode import Encoded, TargetSet, build_targets, encode_all
from streamrec.model.events import BROWSE, CLICK, Interaction
from streamrec.model.splits import Split, split, training_events
from streamrec.model.vocab import Vocab


@dataclass(frozen=True)
class Prepared:
    split: Split
    items: Vocab
    types: Vocab
    encoded: dict[str, Encoded]
    fit: list[Encoded]  # what the model is fitted on (each user's first fit_len events)
    valid: TargetSet
    test: TargetSet
    fingerprint: str  # of the events (order-sensitive), stored in checkpoints


def fingerprint(events: list[Interaction]) -> str:
    h = hashlib.sha256()
    for e in events:
        h.update(f"{e.user_id}\t{e.item_id}\t{e.event_type}\t{e.ts}\n".encode())
    return h.hexdigest()


def prepare(events: list[Interaction], protocol: str, items: Vocab | None = None,
            types: Vocab | None = None, window: int | None = None) -> Prepared:
    """Split and encode; pass ``items``/``types`` to reuse a trained model's vocabularies and
    ``window=m`` to mask test targets by the serving rule (model/encode.py)."""
    sp = split(events, protocol)
    train = training_events(sp)
    if items is None:
        items = Vocab.build(e.item_id for e in train)
    if types is None:
        # click and browse always have a slot: the streaming topics carry them by default.
        types = Vocab.build([CLICK, BROWSE] + [e.event_type for e in train])
    encoded = encode_all(sp.sequences, items, types)
    fit = [Encoded(e.items[:k], e.types[:k], e.gaps[:k], e.ts[:k])
           for u, e in encoded.items() if (k := sp.fit_len[u]) > 0]
    return Prepared(split=sp, items=items, types=types, encoded=encoded, fit=fit,
                    valid=build_targets(encoded, sp.valid), test=build_targets(encoded, sp.test, window),
                    fingerprint=fingerprint(events))
