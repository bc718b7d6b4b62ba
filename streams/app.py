"""The worker as a Faust app module, configured by the environment: what ``faust -A`` loads.

    STREAMREC_BUNDLE=bundles/m1 STREAMREC_BROKERS=127.0.0.1:9092 faust -A streamrec.streams.app worker -l info

It only builds a ``streams.worker.Worker`` from ``WorkerConfig.from_env()`` (``streams/config.py``
lists the variables) and exposes its Faust app; ``streamrec worker`` builds the same worker from
its flags without this module. Everything the worker does is in ``streams/worker.py``.
"""
from __future__ import annotations

from streamrec.streams.config import WorkerConfig
from streamrec.streams.worker import Worker

worker = Worker(WorkerConfig.from_env())
app = worker.app
