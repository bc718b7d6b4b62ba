"""Where each input partition stands, and what to do with the next record of it: a pure rule.

The worker keeps its own durable record of the last offset it finished in every input partition
(table ``input-progress``, written with each event's state, changelogged like it). Kafka's
committed offset is then only where reading starts: whatever the consumer library does around a
crash, a restart or a rebalance (faust-streaming can skip records there and commit past them,
compare its issues #216 and #221), the worker applies each partition's records contiguously:

- ``APPLY``: the record that follows the last finished one (or the first record ever seen of a
  partition without a record: Kafka's position is trusted then);
- ``REPLAYED``: at or before the last finished offset: already done (a redelivery), skip it;
- ``REWIND``: a record after a hole: seek the partition back to the first unfinished offset and
  skip this record (it comes again);
- ``STALE``: after a rewind, a record newer than the one that revealed the hole (fetched before
  the seek): skip it, it comes again.

After a rewind to ``E`` that a record ``F`` caused, the first record at or before ``F`` is the
start of the fetch from ``E``: if it is ``E``, the hole was the consumer's and is closed. If it is
a later ``G``, the worker seeks back to ``E`` again; when ``confirmations`` (3) fetches in a row
from ``E`` start at the same ``G``, the offsets ``E .. G-1`` do not exist (deleted by retention,
compacted, or transaction markers of a transactional producer) and the worker goes on from ``G``,
counting them (``absent``).

``stalled`` is the other half: a partition whose records stop arriving while Kafka has more of
them (a skip at the tail of a stream leaves no later record to reveal the hole).
"""
from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

APPLY, REPLAYED, REWIND, STALE = "apply", "replayed", "rewind", "stale"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a record: ``action``; for ``REWIND`` the offset to seek to; for ``APPLY`` after
    a rewind, the offsets found absent as ``(first, end)`` (end exclusive), else None."""

    action: str
    seek_to: int | None = None
    absent: tuple[int, int] | None = None


class PartitionGuard:
    """Turns (partition, offset, last finished offset) into a ``Decision``; remembers open rewinds.

    One per worker; ``forget()`` on a rebalance (a new consumer generation re-reads every partition
    from its committed offset, and the finished offsets are read afresh from the table)."""

    def __init__(self, confirmations: int = 3) -> None:
        self.confirmations = confirmations
        # partition -> (rewound to E, revealed by F, the record the fetches from E started at, how often)
        self._rewinds: dict[Hashable, tuple[int, int, int | None, int]] = {}

    def check(self, partition: Hashable, offset: int, finished: int | None) -> Decision:
        if finished is None:
            self._rewinds.pop(partition, None)
            return Decision(APPLY)
        expected = finished + 1
        if offset < expected:
            return Decision(REPLAYED)
        if offset == expected:
            self._rewinds.pop(partition, None)
            return Decision(APPLY)
        rewind = self._rewinds.get(partition)
        if rewind is None or rewind[0] != expected:
            self._rewinds[partition] = (expected, offset, None, 0)
            return Decision(REWIND, seek_to=expected)
        _, revealed_by, started_at, times = rewind
        if offset > revealed_by:
            return Decision(STALE)
        # the fetch from E started here, after E: E .. offset-1 are absent, or skipped once more
        times = times + 1 if offset == started_at else 1
        if times >= self.confirmations:
            del self._rewinds[partition]
            return Decision(APPLY, absent=(expected, offset))
        self._rewinds[partition] = (expected, offset, offset, times)
        return Decision(REWIND, seek_to=expected)

    def rewinding(self, partition: Hashable) -> bool:
        return partition in self._rewinds

    def forget(self) -> None:
        self._rewinds.clear()


def stalled(finished: int | None, end: int | None, idle_s: float, stall_s: float) -> bool:
    """Whether a partition should be sought back to ``finished + 1``: Kafka holds records after the
    last finished one (``end`` is the partition's end offset: the next offset to be written), yet
    none arrived for ``stall_s`` seconds. A partition without a finished record never stalls."""
    return finished is not None and end is not None and end > finished + 1 and idle_s >= stall_s
