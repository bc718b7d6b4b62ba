"""A worker built in-process from its config (no broker, no import-time state), and the adapter's check
of faust's private attributes."""
from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.export.runtime import Bundle
from streamrec.streams import faust_adapter
from streamrec.streams.config import ConfigError, WorkerConfig
from streamrec.streams.worker import Worker


def test_two_workers_built_in_one_process_are_independent(bundle_dir: Path, bundle: Bundle, tmp_path: Path) -> None:
    a = Worker(WorkerConfig(bundle=bundle_dir, app_id="a", clicks_topic="c1", browses_topic="b1", k=3,
                            data_dir=tmp_path / "a", batch_max=16, in_flight=64, producer_batch_bytes=65536,
                            consumer="thread"))
    b = Worker(WorkerConfig(bundle=bundle_dir, app_id="b", data_dir=tmp_path / "b"))
    assert a.app is not b.app and a.app.conf.id == "a" and b.app.conf.id == "b"
    assert a.table_name == b.table_name == f"user-state-{bundle.version}"
    assert a.events_topic.topics == ("c1", "b1") and a.rules.slots == {"c1": 0, "b1": 1}
    assert (a.k, b.k) == (3, bundle.k) and a.rules.kinds == {"c1": "click", "b1": "browse"}
    assert (a.inbox.batch_max, a.config.in_flight) == (16, 64) and b.inbox.batch_max == 256
    assert (a.app.conf.producer_max_batch_size, b.app.conf.producer_max_batch_size) == (65536, 256 * 1024)
    assert a.bundle is None and a.load_bundle().version == bundle.version  # the model loads on demand, once
    assert a.load_bundle() is a.bundle
    assert a.counts == {} and b.pending == {}
    # the app's consumer fetches in batches for this worker's topics (a subclass set on its own transport)
    assert a.app.transport.Consumer is not b.app.transport.Consumer
    assert a.app.transport.Consumer.__name__ == "BatchConsumer"
    # its Kafka consumer runs on a thread of its own as Faust's does (consumer="thread"), or on the worker's loop
    assert (type(a.app.consumer._thread).__name__, type(b.app.consumer._thread).__name__) == ("HoldingThread",
                                                                                              "LoopConsumer")
    assert b.app.consumer._thread.thread_loop is b.app.consumer._thread.parent_loop


def test_k_above_the_bundles_is_refused(bundle_dir: Path, bundle: Bundle, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exceeds the bundle's k"):
        Worker(WorkerConfig(bundle=bundle_dir, k=bundle.k + 1, data_dir=tmp_path))


def test_the_adapter_names_what_an_installed_faust_lacks(bundle_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    worker = Worker(WorkerConfig(bundle=bundle_dir, data_dir=tmp_path))
    faust_adapter.check(worker.app)  # the pinned versions have everything
    store = __import__("faust.stores.rocksdb", fromlist=["Store"]).Store
    monkeypatch.delattr(store, "_db_for_partition")
    with pytest.raises(faust_adapter.AdapterError, match=r"_db_for_partition.*Install the versions pyproject"):
        faust_adapter.check(worker.app)
    with pytest.raises(faust_adapter.AdapterError):
        Worker(WorkerConfig(bundle=bundle_dir, data_dir=tmp_path / "2"))  # refused when built, before Faust starts


def test_partitions_faust_does_not_take_are_paused_in_aiokafka() -> None:
    """``hold_inactive`` against aiokafka's own subscription state: a partition Faust does not take
    records from is paused in aiokafka and what was fetched for it dropped (so it cannot hold the
    broker's next fetch back, see the adapter); it is resumed, and fetched again, once Faust takes it."""
    import asyncio
    from types import SimpleNamespace

    from aiokafka.consumer.subscription_state import SubscriptionState
    from aiokafka.structs import TopicPartition as TP

    async def main() -> None:
        clicks, changelog = TP("clicks", 0), TP("app-user-state-changelog", 0)
        subscriptions = SubscriptionState()
        subscriptions.assign_from_user({clicks, changelog})
        state = subscriptions.subscription.assignment.state_value
        fetcher = SimpleNamespace(_subscriptions=subscriptions, _records={clicks: "fetched", changelog: "fetched"})
        consumer = SimpleNamespace(_fetcher=fetcher)
        faust_adapter.hold_inactive(consumer, {clicks})  # recovered: Faust takes only the input
        assert state(changelog).paused and changelog not in fetcher._records
        assert not state(clicks).paused and fetcher._records[clicks] == "fetched"
        faust_adapter.hold_inactive(consumer, {clicks, changelog})  # a rebalance: the changelog is read again
        assert not state(changelog).paused
        faust_adapter.hold_inactive(SimpleNamespace(_fetcher=SimpleNamespace(
            _subscriptions=SubscriptionState(), _records={})), {clicks})  # nothing assigned yet: nothing to do

    asyncio.run(main())


def test_records_faust_would_drop_after_a_rebalance_are_put_back() -> None:
    """A fetch that returns while Faust's flow is stopped, or after the consumer generation changed, or
    with records of a partition Faust no longer takes, is sought back to each such partition's first
    fetched record (Faust would drop them, aiokafka having moved past them); the rest is returned."""
    from types import SimpleNamespace

    clicks0, clicks2, browses2, gone = ("clicks", 0), ("clicks", 2), ("browses", 2), ("browses", 0)
    fetched = {tp: [SimpleNamespace(offset=o) for o in (first, first + 1)]
               for tp, first in ((clicks0, 7), (clicks2, 0), (browses2, 40), (gone, 3))}

    class Consumer:  # aiokafka's: what is assigned now, and its seeks
        def __init__(self) -> None:
            self.seeks: dict = {}

        def assignment(self) -> set:
            return {clicks0, clicks2, browses2}

        def seek(self, tp: tuple, offset: int) -> None:
            self.seeks[tp] = offset

    def faust(flow: bool, active: set | None, buffered: frozenset = frozenset()) -> SimpleNamespace:
        return SimpleNamespace(flow_active=flow, _active_partitions=active, _buffered_partitions=buffered)

    # the flow stopped during the wait: nothing is delivered, every assigned partition is read again
    c = Consumer()
    assert faust_adapter.put_back_undeliverable(c, faust(False, set()), fetched, False) == {}
    assert c.seeks == {clicks0: 7, clicks2: 0, browses2: 40}  # "gone" is another worker's now
    # flow running again, but the generation changed while the fetch waited: the same
    c = Consumer()
    assert faust_adapter.put_back_undeliverable(c, faust(True, {clicks0, clicks2, browses2}), fetched, True) == {}
    assert c.seeks == {clicks0: 7, clicks2: 0, browses2: 40}
    # same generation: only the partitions Faust does not take now (neither active nor buffered)
    c = Consumer()
    kept = faust_adapter.put_back_undeliverable(c, faust(True, {clicks0}, frozenset({browses2})), fetched, False)
    assert kept == {clicks0: fetched[clicks0], browses2: fetched[browses2]} and c.seeks == {clicks2: 0}
    # nothing to put back, or nothing fetched: returned as it is, no seek
    c = Consumer()
    assert faust_adapter.put_back_undeliverable(c, faust(True, set(fetched)), fetched, False) is fetched
    assert faust_adapter.put_back_undeliverable(c, faust(True, None), fetched, False) is fetched
    assert faust_adapter.put_back_undeliverable(c, faust(False, None), {}, True) == {} and c.seeks == {}


def test_at_least_once_stores_and_acknowledges_only_after_the_changelog_has_the_states(
        bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule that keeps the changelog complete across a SIGKILL under at-least-once: a batch's states
    go to the local table, and its records are acknowledged to Faust (their offsets become committable),
    only once Kafka acknowledged the batch's changelog writes, and batch after batch in arrival order
    even when a later batch's writes are acknowledged first; a failed write stores and acknowledges
    nothing, of that batch or any later one, and stops the worker."""
    import asyncio

    publisher = Worker(WorkerConfig(bundle=bundle_dir, data_dir=tmp_path)).publisher
    events: list[tuple[str, object]] = []
    monkeypatch.setattr(publisher, "put_local", lambda local: events.append(("stored", sorted(local))))
    monkeypatch.setattr(publisher, "_acknowledge", lambda admitted: events.append(("acked", list(admitted))))
    monkeypatch.setattr(faust_adapter, "changelog_written", lambda app, table, eos: lambda future: None)
    failures: list[BaseException] = []

    async def failed(exc: BaseException) -> None:
        failures.append(exc)

    monkeypatch.setattr(publisher, "on_failure", failed)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        writes = [loop.create_future() for _ in range(4)]
        blobs = [b"s%d" % n for n in range(4)]
        publisher.pending.update({b"u1": blobs[1], b"u2": blobs[2]})  # the states of batches 1 and 2, not yet stored
        chain = None
        for n, write in enumerate(writes):
            chain = asyncio.ensure_future(publisher._store_when_written(
                chain, [write], {n: [(b"u%d" % n, blobs[n])]}, {b"u%d" % n: (0, n, blobs[n])}, [f"m{n}"]))
        writes[1].set_result(None)  # batch 1's changelog write is acknowledged before batch 0's
        await asyncio.sleep(0.01)
        assert events == []  # nothing stored or acknowledged: batch 0's states are not in Kafka yet
        writes[0].set_result(None)
        await asyncio.sleep(0.01)
        assert events == [("stored", [0]), ("acked", ["m0"]), ("stored", [1]), ("acked", ["m1"])]
        assert publisher.pending == {b"u2": blobs[2]}  # batch 1's state is read from the table now
        writes[3].set_result(None)
        writes[2].set_exception(OSError("broker gone"))
        assert chain is not None and await chain is False
        assert len(events) == 4 and [str(e) for e in failures] == ["broker gone"]  # batches 2 and 3: neither

    asyncio.run(main())
