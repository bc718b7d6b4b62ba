"""The worker's local state table after a crash: the running marker and, under exactly-once, the wipe.

A worker writes ``<data dir>/streamrec.running`` when it starts and deletes it after a clean stop.
Under exactly-once, a worker that finds the marker at start did not stop cleanly (SIGKILL, power
loss) and may have left writes of transactions Kafka then aborted in its local RocksDB: the local
table is deleted so that Faust rebuilds it from the changelog, read committed::

    marker = RunningMarker(data_dir)
    wiped = marker.start(wipe=tabledir if exactly_once else None)   # at worker start (once)
    marker.stopped()                                                # after a clean stop
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger("streamrec.worker")


class RunningMarker:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / "streamrec.running"  # exists while a worker runs on this data dir
        self._started = False

    def start(self, wipe: Path | None) -> bool:
        """Write the marker (once per worker); if it was there and ``wipe`` is given, delete that folder
        first. Returns whether it did."""
        if self._started:
            return False
        self._started = True
        wiped = False
        if wipe is not None and self.path.exists():
            log.warning("the last worker on %s did not stop cleanly: rebuilding the state table from its changelog",
                        self.data_dir)
            shutil.rmtree(wipe, ignore_errors=True)
            wiped = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("streamrec worker running; deleted on a clean stop\n")
        return wiped

    def stopped(self) -> None:
        self.path.unlink(missing_ok=True)
