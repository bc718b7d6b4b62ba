"""``manifest.json``: what a bundle is (ids, dims, event types, gap buckets, metrics) and the
sha256 of every file in it. Torch-free: the worker reads it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

FORMAT = "streamrec.bundle"
VERSION = 1


class BundleError(ValueError):
    """A bundle that is missing, tampered with or does not match its manifest."""


@dataclass(frozen=True)
class Manifest:
    model_id: str
    model_version: str  # model_id + content hash of step.onnx: states are keyed by it
    created: str  # ISO-8601 UTC
    layers: int
    hidden: int
    dim: int
    n_items: int  # vocabulary size incl. PAD and OOV
    k: int  # recommendations per list
    m: int  # seen-items window
    n_top: int  # top list length in the graph (k + m, capped by the catalog)
    event_types: list[str]
    n_gap_buckets: int
    gap_rule: str
    opset: int
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # name -> sha256
    # two-stage bundles only (export/ann.py): kind, library, file, table, dim, params, candidates,
    # recall (measured at export); empty: the graph scans the whole catalog
    index: dict = field(default_factory=dict)
    # > 0: the model attends over the user's last ``attention`` distinct known items and the step
    # takes them as its ``window`` input (export/contract.py); 0 (absent from the file): no window
    attention: int = 0
    format: str = FORMAT
    version: int = VERSION

    def to_json(self) -> str:
        doc = asdict(self)
        if not doc["index"]:  # a full-scan bundle's manifest stays as it was
            del doc["index"]
        if not doc["attention"]:  # so does a bundle without attention
            del doc["attention"]
        return json.dumps(doc, indent=2, sort_keys=True)

    @property
    def indexed(self) -> bool:
        return bool(self.index)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise BundleError("manifest.json is not a streamrec bundle manifest")
        if data.get("version") != VERSION:
            raise BundleError(f"bundle format version {data.get('version')} (this code reads {VERSION})")
        try:
            return cls(**data)
        except TypeError as exc:
            raise BundleError(f"manifest.json has unexpected fields: {exc}") from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_files(root: Path, manifest: Manifest) -> None:
    """Every listed file exists with its checksum; raises BundleError naming each problem."""
    problems = []
    for name, digest in sorted(manifest.files.items()):
        p = root / name
        if not p.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(p) != digest:
            problems.append(f"{name}: sha256 differs from the manifest (modified or corrupted)")
    if problems:
        raise BundleError(f"bundle {root} refused: " + "; ".join(problems))
