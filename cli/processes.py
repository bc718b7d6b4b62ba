"""Child processes that never outlive their parent: each runs in its own session (so a
terminal's Ctrl-C reaches only the parent, which then stops them in order), gets SIGTERM if
the parent dies (PR_SET_PDEATHSIG), and is stopped with SIGTERM, then SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


class Processes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], log: Path, **kw) -> subprocess.Popen:
        """Start ``args``; stdout and stderr go to ``log`` unless ``stdout=`` is given."""
        from streamrec.streams.broker import _die_with_parent

        stdout = kw.pop("stdout", None)
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=stdout or out,
                                    stderr=subprocess.STDOUT if stdout is None else out, start_new_session=True,
                                    preexec_fn=_die_with_parent, **kw)  # noqa: PLW1509 - one syscall
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 20.0) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)
