"""FetchPacer: fetches wait at the broker only while records arrive fast (streams/fetch_pacing.py)."""
from __future__ import annotations

import pytest

from streamrec.streams.config import WorkerConfig
from streamrec.streams.fetch_pacing import FetchPacer


def _feed(pacer: FetchPacer, rate: float, seconds: float, start: float, every: float = 0.002) -> tuple[float, list[bool]]:
    """Hand-overs every ``every`` s of ``rate * every`` records for ``seconds``; the switches seen."""
    t, switches = start, []
    while t < start + seconds:
        t += every
        if pacer.observe(round(rate * every), t):
            switches.append(pacer.paced)
    return t, switches


def test_a_quiet_stream_never_waits() -> None:
    pacer = FetchPacer(wait_s=0.003)  # waits from 2 / 3 ms = 667 records/s
    t, switches = 0.0, []
    for _ in range(2000):  # 100 events/s, one a fetch
        t += 0.01
        switches.append(pacer.observe(1, t))
    assert not any(switches) and not pacer.paced
    assert pacer.rate == pytest.approx(100, rel=0.05)


def test_fast_records_start_the_wait_and_a_slowdown_ends_it() -> None:
    pacer = FetchPacer(wait_s=0.003)
    pacer.observe(0, 0.0)
    t, switches = _feed(pacer, 2000, 1.0, 0.0)
    assert switches == [True] and pacer.paced and pacer.wait_ms == 3
    t, switches = _feed(pacer, 500, 1.0, t)  # between half the threshold and the threshold: stays
    assert switches == [] and pacer.paced
    t, switches = _feed(pacer, 200, 1.0, t, every=0.005)
    assert switches == [False] and not pacer.paced


def test_an_idle_poll_after_a_burst_ends_the_wait() -> None:
    pacer = FetchPacer(wait_s=0.003)
    pacer.observe(0, 0.0)
    t, _ = _feed(pacer, 5000, 0.5, 0.0)
    assert pacer.paced
    assert pacer.observe(0, t + 1.0)  # the consumer's poll timed out: nothing for a second
    assert not pacer.paced


def test_zero_wait_turns_it_off() -> None:
    pacer = FetchPacer(wait_s=0.0)
    _, switches = _feed(pacer, 50_000, 1.0, 0.0)
    assert switches == [] and not pacer.paced
    with pytest.raises(ValueError):
        FetchPacer(wait_s=-1)


def test_the_worker_setting_is_in_milliseconds() -> None:
    config = WorkerConfig.from_env({"STREAMREC_BUNDLE": "b", "STREAMREC_FETCH_WAIT": "5"})
    assert config.fetch_wait == pytest.approx(0.005)
    assert WorkerConfig.from_env(config.to_env()).fetch_wait == pytest.approx(0.005)
    assert WorkerConfig.from_env({"STREAMREC_BUNDLE": "b"}).fetch_wait == pytest.approx(0.003)
