"""``streamrec kafka start|stop|status``: a local Apache Kafka (KRaft) for the worker and the demos.

``start`` leaves the broker running detached and prints its bootstrap address alone on the last
line of stdout, so scripts can do ``BROKERS=$(streamrec kafka start)``.  Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from streamrec.cli.main import CliError

ENV_HELP = """\
environment:
  STREAMREC_HOME           cache and run folder (default ~/.cache/streamrec): jars in kafka-VERSION/,
                           state and data in kafka-run/NAME/
  STREAMREC_KAFKA_VERSION  Kafka version fetched from Maven Central (default %(version)s)
  STREAMREC_KAFKA_PORT     client port when --port is not given (default: a free port)
  KAFKA_HEAP_OPTS          JVM heap flags per broker (default -Xmx512m -Xms256m)
needs `java` (17+) and `mvn` on PATH; the first start downloads the jars once (log: kafka-VERSION/mvn.log).

examples:
  BROKERS=$(streamrec kafka start)          one broker on a free port
  streamrec kafka start --port 9092 --brokers-count 3 --name eos
  streamrec kafka start --override log.retention.hours=24 --override log.index.size.max.bytes=10485760
  streamrec kafka status --name eos
  streamrec kafka stop --name eos
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from streamrec.streams.broker import DEFAULT_VERSION
    from streamrec.streams.kafka_dist import INDEX_MAX_BYTES

    parser = subparsers.add_parser(
        "kafka", help="start, stop or inspect a local Kafka broker (KRaft; jars from Maven Central)",
        description="Run a real Apache Kafka broker (or a 3-node cluster) on 127.0.0.1, detached.",
        epilog=ENV_HELP % {"version": DEFAULT_VERSION}, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--name", default="default", help="which broker (several may run side by side; default: default)")
    parser.add_argument("--port", type=int, default=None,
                        help="client port of the (first) broker; a cluster uses PORT, PORT+1, ... (env STREAMREC_KAFKA_PORT; default: free port)")
    parser.add_argument("--brokers-count", "--cluster", dest="brokers", type=int, choices=[1, 3], default=1,
                        help="1 broker, or 3 brokers with a 3-voter quorum and replication factor 3 (default 1)")
    parser.add_argument("--data-dir", type=Path, default=None, help="where the logs and data go (default STREAMREC_HOME/kafka-run/NAME)")
    parser.add_argument("--version", dest="kafka_version", default=None,
                        help=f"Kafka version (env STREAMREC_KAFKA_VERSION; default {DEFAULT_VERSION})")
    parser.add_argument("--partitions", type=int, default=8, help="default partitions of auto-created topics (default 8)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="start: a server.properties entry over streamrec's defaults (repeatable, as Kafka's own "
                             f"--override). Among those defaults: log.index.size.max.bytes={INDEX_MAX_BYTES} (Kafka's is 10 MiB: "
                             "a fresh partition's first index entry then stalls produce requests while the kernel "
                             "reads ahead into the index's map)")
    parser.add_argument("--fresh", action="store_true", help="start: delete the data of a previous run of NAME first")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the broker to serve (default 120)")
    parser.set_defaults(func=run)


def _say(message: str) -> None:
    print(f"[kafka] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from streamrec.streams import broker as kb

    if args.port is not None and not 0 < args.port < 65536:
        raise CliError(f"--port {args.port}: not a TCP port")
    current = kb.load(args.name)
    running = current is not None and current.is_running()
    if args.action == "status":
        if not running:
            print(f"kafka {args.name}: not running")
            return 1
        assert current is not None
        pids = ",".join(str(b.pid) for b in current.brokers)
        print(f"kafka {args.name}: running, Kafka {current.brokers[0].version}, {len(current.brokers)} broker(s), "
              f"pid {pids}, data {current.brokers[0].data_dir.parent}, log {current.brokers[0].log_path}")
        print(current.bootstrap)
        return 0
    if args.action == "stop":
        if current is None:
            print(f"kafka {args.name}: not running")
            return 0
        if not running and any(b.is_running() for b in current.brokers):
            _say("only part of the cluster was running; stopping the rest")
        current.stop()
        print(f"kafka {args.name}: stopped")
        return 0
    # start
    try:
        overrides = kb.parse_overrides(args.override)
    except ValueError as exc:
        raise CliError(f"--override {exc}") from None
    if running:
        assert current is not None
        _say(f"{args.name!r} already running (pid {','.join(str(b.pid) for b in current.brokers)})")
        if overrides:
            _say(f"--override not applied: it takes effect at a start (stop {args.name!r} first)")
        print(current.bootstrap)
        return 0
    if current is not None:  # stale state of a crashed run (or a partial cluster): clean it up
        current.stop(timeout=10.0)
    data_dir = args.data_dir.resolve() if args.data_dir else None
    if args.fresh:
        target = data_dir or kb.streamrec_home() / "kafka-run" / args.name
        for node_dir in sorted(target.glob("node-*")):  # only what start_cluster made, never the folder itself
            _say(f"--fresh: deleting {node_dir}")
            shutil.rmtree(node_dir, ignore_errors=True)
    try:
        cluster = kb.start_cluster(args.brokers, port=args.port, data_dir=data_dir, name=args.name,
                                   version=args.kafka_version, partitions=args.partitions,
                                   timeout=args.timeout, extra_config=overrides, progress=_say)
    except kb.BrokerError as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:  # e.g. a non-numeric STREAMREC_KAFKA_PORT
        raise CliError(f"bad setting: {exc} (STREAMREC_KAFKA_PORT={os.environ.get('STREAMREC_KAFKA_PORT')!r})") from None
    _say(f"running (pid {','.join(str(b.pid) for b in cluster.brokers)}); stop with: streamrec kafka stop --name {args.name}")
    _say(f"broker log: {cluster.brokers[0].log_path}")
    print(cluster.bootstrap, flush=True)
    return 0
