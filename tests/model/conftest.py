"""Fixtures for the data layer's tests: where the real data sets are, and a cached loader."""
from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import pytest

from streamrec.model.data import load
from streamrec.model.events import Interaction

REPO = Path(__file__).resolve().parents[2]


def _find_data() -> tuple[Path | None, str]:
    """(directory or None, where it was looked for): ``$STREAMREC_DATA`` if set, else ``<repo>/../shared/data``."""
    env = os.environ.get("STREAMREC_DATA")
    candidate = Path(env) if env else REPO.parent / "shared" / "data"
    where = f"STREAMREC_DATA={env}" if env else str(candidate)
    return (candidate if candidate.is_dir() else None), where


@pytest.fixture
def data_dir(request: pytest.FixtureRequest) -> Path:
    """The real data sets' directory: the suite-wide ``shared_data`` fixture when it exists,
    else ``$STREAMREC_DATA`` or ``<repo>/../shared/data``; skips the test when absent."""
    try:
        return Path(request.getfixturevalue("shared_data"))
    except pytest.FixtureLookupError:
        pass
    found, where = _find_data()
    if found is None:
        pytest.skip(f"real data sets not found at {where}: set STREAMREC_DATA to their directory")
    return found


@lru_cache(maxsize=8)
def _load_cached(path: str, fmt: str) -> tuple[Interaction, ...]:
    return tuple(load(path, fmt))


@pytest.fixture
def real_events(data_dir: Path) -> Callable[[str, str], list[Interaction]]:
    """``real_events("beauty", "sequences")``: a real data set's events, loaded once per session."""
    return lambda rel, fmt: list(_load_cached(str(data_dir / rel), fmt))
