"""The worker's topics: create the missing ones and refuse input topics of another partition count.

An input topic must have the state table's partition count: Faust writes a user's state to the
table partition of the event's input partition, so another count would put events of one user
into several state partitions.
"""
from __future__ import annotations

import logging

from streamrec.streams.config import ConfigError, WorkerConfig
from streamrec.streams.security import kafka_python_kwargs

log = logging.getLogger("streamrec.worker")


def mismatch(config: WorkerConfig, topic: str, found: int) -> str:
    """The error for input ``topic`` having ``found`` partitions instead of the table's."""
    return (f"input topic {topic!r} has {found} partitions, the state table {config.partitions}: start the worker "
            f"with --partitions {found} (and a new --app-id), or recreate the topic with {config.partitions}")


def ensure_topics(config: WorkerConfig, timeout_s: float = 30.0) -> None:
    """Create the missing topics (input, output, dead letters) with the table's partition count and
    refuse input topics with another count (``ConfigError``). Blocking (kafka-python): ``streamrec
    worker`` calls it before Faust starts, because topics Faust declares itself may not be in the
    broker's metadata yet when it subscribes (a partly assigned worker would ignore one input topic
    for minutes)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    logging.getLogger("kafka").setLevel(logging.WARNING)  # its INFO lines would drown the worker's
    names = [config.clicks_topic, config.browses_topic, config.output_topic, config.dlq_topic]
    admin = KafkaAdminClient(bootstrap_servers=config.brokers.split(","), client_id=f"{config.app_id}-admin",
                             request_timeout_ms=int(timeout_s * 1000), **kafka_python_kwargs(config))

    def describe() -> dict[str, int]:
        return {t["name"]: len(t["partitions"]) if isinstance(t["partitions"], list) else int(t["partitions"])
                for t in admin.describe_topics(names) if t["error_code"] == 0}
    try:
        found = describe()
        if missing := [n for n in names if n not in found]:
            log.info("creating topics %s with %d partitions", missing, config.partitions)
            admin.create_topics([NewTopic(n, config.partitions, config.replication) for n in missing],
                                raise_errors=False, wait_for_metadata=True)
            found = describe()
    finally:
        admin.close()
    inputs = (config.clicks_topic, config.browses_topic)
    if problems := [mismatch(config, t, n) for t, n in found.items() if t in inputs and n != config.partitions]:
        raise ConfigError("; ".join(problems))
