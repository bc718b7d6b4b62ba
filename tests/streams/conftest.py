"""Fixtures for the worker's tests: one real bundle per session, and a by-hand reference stepper.

``by_hand`` steps a bundle one event at a time with the serving rules written out plainly (gap
from the newest time, seen window of the last m distinct known items, top-k of the rest), written
independently of ``streams.logic`` so that the two can check each other.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from streamrec.export.runtime import Bundle
from streamrec.model.events import Interaction
from streamrec.model.gaps import gap_bucket
from tests.factories import make_bundle


@dataclass(frozen=True)
class Step:
    """What the model gives after one event when stepped by hand."""

    items: list[str]
    scores: list[float]
    h: np.ndarray  # [L, H]
    c: np.ndarray
    seen: list[int]
    last_ts: int


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real exported bundle (tiny model trained on ``small_events()``, k=10, m=20); ~15 s once."""
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b1")


@pytest.fixture(scope="session")
def bundle(bundle_dir: Path) -> Bundle:
    return Bundle.load(bundle_dir)


@pytest.fixture(scope="session")
def attention_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A tiny model that attends over the user's last 4 distinct items (k=10, m=20); ~5 s once."""
    return Bundle.load(make_bundle(tmp_path_factory.mktemp("bundle") / "att", epochs=1, attention=4))


def step_by_hand(bundle: Bundle, events: Sequence[Interaction], k: int | None = None) -> list[Step]:
    """One user's events, in the given order, through ``bundle.step`` with batch size 1."""
    k = k or bundle.k
    m = bundle.manifest.m
    h, c = bundle.init_state(1)
    last: int | None = None
    seen: list[int] = []
    out = []
    a = bundle.manifest.attention
    for e in events:
        item = bundle.items.index(e.item_id)
        gap = gap_bucket(None if last is None else e.ts - last, bundle.manifest.n_gap_buckets)
        if item > 1:  # PAD/OOV never enter the window
            if item in seen:
                seen.remove(item)
            seen = (seen + [item])[-m:]
        # attention bundles: the newest a items of the window after this event, oldest first, PAD 0 on the left
        window = {"window": np.array([[0] * (a - len(seen[-a:])) + seen[-a:]], np.int64)} if a else {}
        r = bundle.step(np.array([item]), np.array([bundle.types.index(e.event_type)]), np.array([gap]), h, c,
                        **window)
        h, c = r.h, r.c
        last = e.ts if last is None else max(last, e.ts)
        items, scores = [], []
        for i, s in zip(r.top_items[0].tolist(), r.top_scores[0].tolist()):
            if i not in seen and len(items) < k:
                items.append(bundle.items.token(i))
                scores.append(s)
        out.append(Step(items, scores, h[:, 0].copy(), c[:, 0].copy(), list(seen), last))
    return out


@pytest.fixture(scope="session")
def by_hand() -> Callable[..., list[Step]]:
    return step_by_hand
