"""No pickle anywhere (issue 6, Security): every artifact the project reads is plain data.

Bundles are ONNX + JSON, states a documented byte layout (streams/state.py), checkpoints are read
with ``torch.load(weights_only=True)`` in one place (model/checkpoint.py). This scans the source
for the ways a pickle could sneak back in.
"""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "export", "streams", "cli", "benchmarks")
FORBIDDEN = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|dill|joblib|shelve|marshal)\b|allow_pickle\s*=\s*True|"
                       r"weights_only\s*=\s*False", re.M)


def test_no_module_can_unpickle() -> None:
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]
    assert len(files) > 30
    offenders = {str(p.relative_to(REPO)): m.group(0).strip() for p in files
                 for m in [FORBIDDEN.search(p.read_text(encoding="utf-8"))] if m}
    assert offenders == {}


def test_torch_load_only_with_weights_only() -> None:
    calls = [(str(p.relative_to(REPO)), line.strip()) for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")
             for line in p.read_text(encoding="utf-8").splitlines() if "torch.load(" in line]
    assert calls, "the checkpoint loader is expected to call torch.load"
    assert all("weights_only=True" in line for _, line in calls), calls
