"""The wheel (issue 14 item 3): built with ``python -m build``, installed into a clean venv with
``[serve]`` only, it runs ``streamrec worker --help`` without torch, puts one package (``streamrec``)
into site-packages and ships the message schemas."""
from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


#: The clean venv must see nothing of this environment's (a PYTHONPATH to a checkout would let pip find
#: streamrec "already installed" there, and the probe import the checkout instead of the wheel).
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def run(*cmd: str | Path, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=CLEAN_ENV)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout[-3000:]}\n" \
                                 f"{done.stderr[-3000:]}"
    return done


def test_the_wheel_serves_without_torch(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    # --no-isolation: the build uses this environment's setuptools (pyproject's build-system), no download
    run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, REPO, cwd=tmp_path)
    (wheel,) = dist.glob("streamrec-*.whl")
    names = run(sys.executable, "-m", "zipfile", "-l", wheel).stdout
    tops = {line.split()[0].split("/")[0] for line in names.splitlines()[1:] if line.strip()}
    assert tops == {"streamrec", wheel.name.split("-py3")[0] + ".dist-info"}, tops  # no model/, cli/ ... at the top
    for schema in ("input-event", "recommendation", "dead-letter"):
        assert f"streamrec/streams/schemas/{schema}.schema.json" in names

    env_dir = tmp_path / "clean"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py, exe = env_dir / "bin" / "python", env_dir / "bin" / "streamrec"
    run(py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{wheel}[serve]", timeout=900)
    help_text = run(exe, "worker", "--help").stdout
    assert "--bundle" in help_text and "--guarantee" in help_text and "--batch-max" in help_text
    installed = run(py, "-m", "pip", "list", "--format", "freeze").stdout.lower()
    assert "torch==" not in installed and "faust-streaming==" in installed and "onnxruntime==" in installed
    probe = run(py, "-c", "import importlib.util as u, sys; import streamrec.streams.worker, streamrec.cli.main; "
                          "print([n for n in ('model', 'export', 'streams', 'cli') if u.find_spec(n)], "
                          "'torch' in sys.modules)", cwd=tmp_path).stdout.split()
    assert probe == ["[]", "False"], probe  # the worker imports without torch; no bare top-level packages
