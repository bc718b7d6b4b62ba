"""benchmarks/profile_summary.py puts each py-spy stack in the category of what it does, not of its root."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "profile_summary.py"
ROOT = ("_run_module_as_main (<frozen runpy>:198);BaseEventLoop.run_until_complete (asyncio/base_events.py:640);"
        "BaseEventLoop.run_forever (asyncio/base_events.py:607);BaseEventLoop._run_once (asyncio/base_events.py:1922);"
        "Handle._run (asyncio/events.py:80)")


def _summarise(stacks: list[tuple[str, int]]) -> dict[str, int]:
    spec = importlib.util.spec_from_file_location("profile_summary", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {row["category"]: row["samples"] for row in module.summarise(stacks)["categories"]}


def test_the_event_loop_at_the_root_does_not_decide_the_category() -> None:
    got = _summarise([
        (ROOT + ";Publisher._complete (streams/publisher.py:203);Future.result (asyncio/futures.py:201)", 3),
        (ROOT + ";Worker._handle (streams/worker.py:258);Counter.update (collections/__init__.py:670)", 5),
        (ROOT + ";Task.__step (asyncio/tasks.py:267)", 7),
        (ROOT + ";Worker._plan (streams/worker.py:315);process (streams/logic.py:212)", 11),
    ])
    assert got == {"sequencing and completions": 3, "other Python": 5, "asyncio scheduling": 7,
                   "per-event logic (process, top-k, runs)": 11}
