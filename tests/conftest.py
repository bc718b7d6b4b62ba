"""Suite-wide fixtures: a real Kafka broker (and a 3-node cluster on demand), and the shared data sets.

Sub-directories add their own fixtures in their own conftest.py files; keep this one generic.

* ``kafka_broker``   session-scoped handle of one real broker (``streams.broker.Broker``; use ``.bootstrap``)
* ``kafka_cluster3`` session-scoped 3-node cluster (``streams.broker.Cluster``), started only if a test asks
* ``shared_data``    Path of the data sets (``$STREAMREC_DATA`` or ``<repo>/../shared/data``), else skip

Tests that use the Kafka fixtures get the ``kafka`` marker (``kafka_cluster`` too for the cluster), so
``pytest -m "not kafka"`` runs without Java.  The jars come from the same cache as ``streamrec kafka``.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamrec.streams.broker import Broker, Cluster, start_broker, start_cluster

REPO = Path(__file__).resolve().parents[1]
KAFKA_START_TIMEOUT = float(os.environ.get("STREAMREC_KAFKA_START_TIMEOUT", "180"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka_cluster: needs the 3-broker Kafka cluster (started on demand, ~15 s)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "kafka_broker" in names or "kafka_cluster3" in names:
            item.add_marker(pytest.mark.kafka)
        if "kafka_cluster3" in names:
            item.add_marker(pytest.mark.kafka_cluster)
        if "shared_data" in names:
            item.add_marker(pytest.mark.shared_data)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One real Kafka broker on a free port, data in a temporary folder, stopped at session end."""
    broker = start_broker(data_dir=tmp_path_factory.mktemp("kafka"), name=None, record_state=False,
                          timeout=KAFKA_START_TIMEOUT, die_with_parent=True)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three real brokers (3-voter KRaft quorum; internal topics rf=3, min.insync.replicas=2)."""
    cluster = start_cluster(3, data_dir=tmp_path_factory.mktemp("kafka3"), name=None, record_state=False,
                            timeout=KAFKA_START_TIMEOUT, die_with_parent=True)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data sets' folder: ``$STREAMREC_DATA`` or ``<repo>/../shared/data``; skips when absent."""
    env = os.environ.get("STREAMREC_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data sets not found at {path}: set STREAMREC_DATA or place the data sets at ../shared/data")
    return path
