"""``Vocab``: string ids (items, event types) <-> dense indices, saved as JSON.

Index 0 is padding (``PAD``), 1 is out-of-vocabulary (``OOV``); real ids start at 2, most
frequent first (ties by id), so the same ids always give the same vocabulary. The vocabulary
travels with the model in the artifact bundle; ``fingerprint()`` identifies its content.
Torch-free: the streaming worker uses it.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PAD = 0
OOV = 1
RESERVED = ("<pad>", "<oov>")  # display names of the reserved slots; never looked up as ids
FORMAT = "streamrec.vocab"
VERSION = 1


class Vocab:
    """An immutable, ordered list of ids behind two reserved slots."""

    __slots__ = ("_ids", "_index", "_every")

    def __init__(self, ids: Sequence[str]):
        """Make a vocabulary whose id ``ids[k]`` has index ``k + 2``. Ids must be distinct strings."""
        ids = list(ids)
        if not all(isinstance(i, str) for i in ids):
            raise TypeError("vocabulary ids must be strings")
        self._index = {tok: k + 2 for k, tok in enumerate(ids)}
        if len(self._index) != len(ids):
            dup = next(tok for tok, n in Counter(ids).items() if n > 1)
            raise ValueError(f"duplicate id {dup!r} in vocabulary")
        self._ids = ids
        self._every = list(RESERVED) + ids  # index -> id, the reserved slots included

    @classmethod
    def build(cls, ids: Iterable[str], *, min_count: int = 1, max_size: int | None = None) -> Vocab:
        """Vocabulary of the ids seen at least ``min_count`` times, by descending frequency then id.

        ``max_size`` caps the number of real ids (the reserved slots are extra).
        """
        counts = Counter(ids)
        ranked = sorted((tok for tok, n in counts.items() if n >= min_count), key=lambda t: (-counts[t], t))
        return cls(ranked[:max_size] if max_size is not None else ranked)

    def extended(self, ids: Iterable[str], *, min_count: int = 1) -> Vocab:
        """This vocabulary with the new ids among ``ids`` (seen at least ``min_count`` times) after
        its own, by descending frequency then id: every existing id keeps its index (incremental
        retraining: the old rows of the model's item tables stay valid)."""
        counts = Counter(tok for tok in ids if tok not in self._index)
        fresh = sorted((tok for tok, n in counts.items() if n >= min_count), key=lambda t: (-counts[t], t))
        return Vocab(self._ids + fresh)

    def extends(self, other: Vocab) -> bool:
        """Whether every id of ``other`` has the same index here (this one is ``other`` plus new ids)."""
        return self._ids[:len(other._ids)] == other._ids

    def index(self, token: str) -> int:
        """Index of ``token``; ``OOV`` when unknown."""
        return self._index.get(token, OOV)

    def indices(self, tokens: Iterable[str]) -> np.ndarray:
        """Indices of ``tokens`` as an int64 array (``OOV`` for unknown ones)."""
        get = self._index.get
        return np.fromiter((get(t, OOV) for t in tokens), dtype=np.int64)

    def tokens(self, indices: Iterable[int]) -> tuple[str, ...]:
        """The ids at ``indices`` (valid indices only: the serving path's fast ``token``)."""
        every = self._every
        return tuple([every[i] for i in indices])

    def token(self, i: int) -> str:
        """The id at index ``i`` (``"<pad>"`` / ``"<oov>"`` for the reserved slots)."""
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} outside vocabulary of size {len(self)}")
        return RESERVED[i] if i < 2 else self._ids[i - 2]

    @property
    def ids(self) -> list[str]:
        """The real ids in index order (index ``k + 2`` for ``ids[k]``); a copy."""
        return list(self._ids)

    def __len__(self) -> int:
        """Number of indices, the two reserved slots included (the embedding table's size)."""
        return len(self._ids) + 2

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self._ids == other._ids

    def __hash__(self) -> int:
        return hash(tuple(self._ids))

    def __repr__(self) -> str:
        return f"Vocab({len(self._ids)} ids + PAD, OOV)"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: format tag, version, reserved names and the ids in index order."""
        return {"format": FORMAT, "version": VERSION, "reserved": list(RESERVED), "ids": list(self._ids)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocab:
        """Inverse of ``to_dict``; rejects other formats, versions or reserved layouts."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        if data.get("version") != VERSION:
            raise ValueError(f"unsupported vocabulary version {data.get('version')!r} (expected {VERSION})")
        if data.get("reserved") != list(RESERVED):
            raise ValueError(f"reserved slots {data.get('reserved')!r} differ from {list(RESERVED)}")
        ids = data.get("ids")
        if not isinstance(ids, list):
            raise ValueError("vocabulary document has no 'ids' list")
        return cls(ids)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the vocabulary as UTF-8 JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocab:
        """Read a vocabulary written by ``save``."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from None

    def fingerprint(self) -> str:
        """sha256 (hex) of the canonical JSON of ``to_dict()``: equal iff the content is equal."""
        blob = json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()
