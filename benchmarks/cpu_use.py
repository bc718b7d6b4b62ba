"""What processes and the machine spent while a benchmark ran, from /proc (Linux): CPU seconds of a
process, the machine's stolen ticks, and the cores each of several processes took over a span."""
from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far, from /proc (None where there is none).
    Time the hypervisor takes from the VM (steal) is not in it, but a core slowed by its neighbours
    still is: on a shared VM the worker's CPU per event of one bundle moved by up to 1.7x (61.7-104.2 us
    over 6 drains, drain-pairs-cosine-default.json)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # fields 14 and 15 of stat(5)
    except (OSError, ValueError, IndexError):
        return None


def machine_ticks() -> tuple[int, int] | None:
    """(steal, all) clock ticks of the machine's CPUs so far (/proc/stat's first line; None where absent)."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return ticks[7], sum(ticks)


def cpu_cores(pids: dict[str, int | None], before: dict[str, float | None], seconds: float,
              ticks_before: tuple[int, int] | None = None) -> dict:
    """Cores each process took since ``before`` (its CPU seconds then) over ``seconds`` of wall clock: the
    worker, the broker and this process (the paced generator's producer threads), while a live run went;
    with ``ticks_before`` (``machine_ticks()`` then), the share of the machine's time the hypervisor stole."""
    out: dict = {"seconds": round(seconds, 2)}
    now_ticks = machine_ticks()
    if ticks_before and now_ticks and now_ticks[1] > ticks_before[1]:
        out["steal_share"] = round((now_ticks[0] - ticks_before[0]) / (now_ticks[1] - ticks_before[1]), 3)
    for name, pid in pids.items():
        now = cpu_seconds(pid) if pid else None
        out[name] = None if now is None or before.get(name) is None else round((now - before[name]) / seconds, 3)
    return out
