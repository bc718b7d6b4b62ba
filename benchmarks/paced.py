"""The latency runs' load generator: a data set's events offered at a fixed rate (benchmarks/streaming.py's
live runs, benchmarks/drain_pairs.py)."""
from __future__ import annotations

import time


def paced_produce(brokers: str, clicks: str, browses: str, events: list, rate: float, producer: str = "librdkafka",
                  linger_ms: int = 0, warm: bool = True) -> dict:
    """Offer ``events`` (the replay's messages: ``streams.replay_plan.plan``, same keys, values and event ids)
    at ``rate`` events/s, acks=all, no linger by default: a load generator that costs the machine little, so
    the latency runs measure the worker rather than the producer beside it on the same 2 cores.
    ``linger_ms`` (librdkafka only; its own default is 5): how long librdkafka may hold a record to send it
    with others. The wait counts in the latency (the record's timestamp is its hand-over), and the broker
    beside the worker serves fewer, larger requests: at 6,400 events/s, 0.7-0.86 of a core instead of ~1.1.

    ``librdkafka`` (default; confluent-kafka, what most production producers are built on): each record
    is handed over when its time comes and librdkafka sends what has queued in one request, as a real
    client does; its C threads cost ~0.1 core at 6,000 events/s. ``aiokafka``: one Python ``send`` per
    record, as the earlier runs (~0.3 core at that rate, and the broker serves more, smaller requests).
    Either way the record's timestamp (the producer's clock when it was handed over) starts its latency.

    ``warm`` (the default; ``--cold-producer`` turns it off): before the first record, the producer connects
    and reads both topics' metadata, as a long-lived production client has; otherwise the first records wait
    in it for that (librdkafka's first metadata took 3-64 ms here), which is the load generator's start, not
    the worker's latency. Every record still counts, from its hand-over."""
    from streamrec.streams.replay_plan import Topics, plan

    messages = plan(events, Topics(clicks=clicks, browses=browses))
    if producer == "aiokafka":
        return _paced_aiokafka(brokers, messages, rate, (clicks, browses) if warm else ())
    p = librdkafka_producer(brokers, linger_ms)
    failures = []

    def delivered(err, _msg) -> None:
        if err is not None:
            failures.append(err)

    warm_ms = None
    if warm:
        t = time.monotonic()
        for topic in (clicks, browses):
            p.list_topics(topic, timeout=30)
        warm_ms = round((time.monotonic() - t) * 1000, 1)
    t0 = time.monotonic()
    for i, m in enumerate(messages):
        p.produce(m.topic, m.value, m.key, on_delivery=delivered)
        delay = t0 + (i + 1) / rate - time.monotonic()
        if delay > 0.0005:
            p.poll(0)
            time.sleep(delay)
    seconds = time.monotonic() - t0
    left = p.flush(120)
    return {"producer": "librdkafka (confluent-kafka; benchmarks/paced.py)", "linger_ms": linger_ms,
            "warm_metadata_ms": warm_ms, "events": len(messages), "sent": len(messages) - len(failures) - left, "failures": len(failures) + left,
            "seconds": round(seconds, 2), "rate": len(messages) / seconds if seconds else None, "order": "none"}


def librdkafka_producer(brokers: str, linger_ms: int = 0):
    """A confluent-kafka producer as the benchmarks' generators use it: acks=all, not idempotent, and
    murmur2_random, the Java client's partitioner (librdkafka's default, CRC32, would put keys on other
    partitions, which the worker dead-letters as wrong_partition)."""
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": brokers, "linger.ms": linger_ms, "acks": "all", "enable.idempotence": False,
                     "partitioner": "murmur2_random", "queue.buffering.max.messages": 1_000_000})


def _paced_aiokafka(brokers: str, messages: list, rate: float, warm_topics: tuple[str, ...]) -> dict:
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def main() -> dict:
        producer = AIOKafkaProducer(bootstrap_servers=brokers, linger_ms=0, acks="all")
        await producer.start()
        for topic in warm_topics:  # their metadata before the first record (see paced_produce's warm)
            await producer.partitions_for(topic)
        loop = asyncio.get_running_loop()
        futures = []
        t0 = loop.time()
        try:
            for i, m in enumerate(messages):
                futures.append(await producer.send(m.topic, m.value, key=m.key))
                delay = t0 + (i + 1) / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            seconds = loop.time() - t0
            failures = sum(1 for r in await asyncio.gather(*futures, return_exceptions=True) if isinstance(r, Exception))
        finally:
            await producer.stop()
        return {"producer": "aiokafka (benchmarks/paced.py)", "events": len(messages),
                "sent": len(messages) - failures, "failures": failures, "seconds": round(seconds, 2),
                "rate": len(messages) / seconds if seconds else None, "order": "none"}

    return asyncio.run(main())
