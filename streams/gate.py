"""What of a batch's plan is published, and where: the warm-up and promote/rollback rules of a worker.

Both are per input partition and per offset, read from the state table through the sequencer
(``Sequencer.stored``): a warm-up's end (``streams/warm.py``) silences the records below it, a
route (``streams/route.py``) sends each recommendation to the topic its record's offset falls in.
Without either (the common case) ``shape`` returns the plan as it is, after one cached lookup per
input partition of the batch.

    gate = OutputGate(sequencer, output_topic, counts)
    plan = gate.shape(plan, records)
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from streamrec.streams.batch import Plan, silence
from streamrec.streams.route import decode_routes, route_key, routed
from streamrec.streams.sequencer import Sequencer

log = logging.getLogger("streamrec.worker")


class OutputGate:
    """Applies warm-up ends and routes to a batch's plan (see the module docstring); logs a warm-up's
    progress (every ``log_every`` seconds) and the end of each partition's warm-up."""

    def __init__(self, sequencer: Sequencer, output_topic: str, counts: Counter[str], log_every: float = 10.0) -> None:
        self.sequencer, self.output_topic, self.counts, self.log_every = sequencer, output_topic, counts, log_every
        self._logged = 0.0  # monotonic time of the last warm-up progress line
        self._warmed: set[Any] = set()  # input partitions whose warm-up this process saw end

    def shape(self, plan: Plan, records: list[Any]) -> Plan:
        tps = {r.tp for r in records}
        plan = silence(plan, self.warming(records, tps))
        routes = {tp: decode_routes(self.sequencer.stored(route_key(tp.topic, tp.partition))) for tp in tps}
        if any(routes.values()):  # after a promote or rollback
            plan.outputs = routed(plan.outputs, records, routes, self.output_topic)
        return plan

    def warming(self, records: list[Any], tps: set[Any]) -> set[int]:
        """Indices of ``records`` that belong to a warm-up: stepped, not published."""
        ends = {tp: self.sequencer.warm_end(tp) for tp in tps}
        if all(end < 0 for end in ends.values()):
            return set()
        quiet = {i for i, r in enumerate(records) if r.offset < ends[r.tp]}
        for tp, end in ends.items():
            if end >= 0 and tp not in self._warmed and any(r.tp == tp and r.offset >= end - 1 for r in records):
                self._warmed.add(tp)
                log.info("warm-up of %s:%d done at offset %d (%d events stepped without publishing in all so far): "
                         "serving its events from here", tp.topic, tp.partition, end, self.counts["warmed"])
        if quiet and time.monotonic() - self._logged > self.log_every:
            self._logged = time.monotonic()
            log.info("warming up: %d events stepped without publishing so far; now at %s", self.counts["warmed"],
                     ", ".join(f"{tp.topic}:{tp.partition}@{max(r.offset for r in records if r.tp == tp)}/{end}"
                               for tp, end in sorted(ends.items()) if end >= 0))
        return quiet
