"""``streamrec replay``: push a data set's events into the worker's input topics, in timestamp order."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

from streamrec.cli.common import DATA_HELP, SECURITY_HELP, add_data_flags, add_security_flags, load_events, security_of

FORMATS_HELP = DATA_HELP.split("protocols (--protocol)")[0]  # these commands take no --protocol
from streamrec.cli.main import CliError

DESCRIPTION = """\
Send every event of a data set to Kafka in timestamp order (kafka-python producer, acks=all,
idempotent, keyed by user_id): clicks to the clicks topic, browses to the browses topic, any
other type (cart, fav, buy, purchase ...) to the clicks topic with its explicit event_type.
Each value is {"user_id", "item_id", "ts" (epoch ms), "event_type", "event_id"}; the event id is
"<user>:<index>" (the event's place in the user's time-sorted history), the same on every replay
of the same data, which `streamrec evaluate-live` uses to match recommendations to targets.

order (--order):
  strict  (default) a user's event that goes to the other topic than their previous event waits
          until the worker has processed that previous one (seen on the recommendations topic by
          its source coordinates, or on the dead-letter topic); other users keep flowing. The
          worker then applies each user's events in timestamp order, so live metrics equal the
          offline ones. Needs a running worker.
  none    send everything without waiting (Kafka keeps order only within a topic partition)
"""

EPILOG = """\
environment (a flag wins):
  STREAMREC_BROKERS         --brokers        (default 127.0.0.1:9092)
  STREAMREC_CLICKS_TOPIC    --clicks-topic   (default clicks)
  STREAMREC_BROWSES_TOPIC   --browses-topic  (default browses)
  STREAMREC_OUTPUT_TOPIC    --output-topic   (default recommendations)
  STREAMREC_DLQ_TOPIC       --dlq-topic      (default events.dlq)
  STREAMREC_PARTITIONS      --partitions     (default 8)
  STREAMREC_SECURITY_PROTOCOL, STREAMREC_SASL_*, STREAMREC_SSL_*: the kafka security flags (below)
Missing input topics are created with --partitions partitions (what the worker expects).

examples:
  BROKERS=$(streamrec kafka start)
  streamrec worker --bundle bundles/ml --brokers $BROKERS &
  streamrec replay --data ../shared/data/ml-100k/ml-100k.inter --format recbole --brokers $BROKERS
  streamrec replay --data events.csv --format csv --columns user_id=u,item_id=i,ts=t:ms,event_type=type \\
                   --cutoff temporal --rate 500 --log sent.jsonl          (only the test period, 500 events/s)
  streamrec replay --data D --format F --from-ts 2024-01-01T00:00:00Z --order none --json
Then: streamrec evaluate-live --data D --format F --bundle B --brokers $BROKERS
Exit status: 0 when every event was acknowledged, 1 when some failed (listed), 2 on a usage error
or when Kafka cannot be reached (a refused login included).

""" + SECURITY_HELP + "\n" + FORMATS_HELP


def env_default(name: str, fallback: str) -> str:
    return os.environ.get(name) or fallback


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("replay", help="push a data set's events into the input topics, in timestamp order",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_flags(p, protocol=False)
    add_kafka_flags(p)
    g = p.add_argument_group("what and how fast")
    start = g.add_mutually_exclusive_group()
    start.add_argument("--from-ts", metavar="TS",
                       help="replay only events at/after TS (epoch ms, or ISO date/time such as 2024-01-01T00:00Z)")
    start.add_argument("--cutoff", choices=["temporal"],
                       help="replay only events at/after the TEMPORAL-stream cutoff T (90th percentile of "
                            "timestamps): the test period. Default: everything (backfill warms every state)")
    speed = g.add_mutually_exclusive_group()
    speed.add_argument("--rate", type=float, metavar="EVENTS_PER_S", help="offer events at this rate")
    speed.add_argument("--max-speed", action="store_true", help="as fast as possible (the default)")
    g.add_argument("--linger-ms", type=int, metavar="MS",
                   help="producer linger (default: 0 below 1,000 events/s offered, so each event leaves at once; "
                        "5 at max speed or faster rates, so batches fill)")
    g.add_argument("--order", choices=["strict", "none"], default="strict",
                   help="per-user order across the two topics (default strict; see above)")
    g.add_argument("--hold-timeout", type=float, default=60.0, metavar="S",
                   help="strict: longest wait for the worker per held event, then send anyway (default 60)")
    g.add_argument("--limit", type=int, metavar="N", help="replay only the first N events (in timestamp order)")
    out = p.add_argument_group("output")
    out.add_argument("--log", metavar="FILE",
                     help="write one JSON line per sent event: event_id, user_id, topic, partition, offset, "
                          "timestamp (produce time, ms), ts")
    out.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def add_kafka_flags(p: argparse.ArgumentParser, partitions: bool = True) -> None:
    """--brokers, the topic names and the security flags, with the worker's environment variables as defaults."""
    g = p.add_argument_group("kafka")
    g.add_argument("--brokers", default=env_default("STREAMREC_BROKERS", "127.0.0.1:9092"), metavar="HOST:PORT[,..]",
                   help="bootstrap servers [STREAMREC_BROKERS] (default %(default)s)")
    for flag, env, default, what in (
            ("--clicks-topic", "STREAMREC_CLICKS_TOPIC", "clicks", "input topic of clicks"),
            ("--browses-topic", "STREAMREC_BROWSES_TOPIC", "browses", "input topic of browses"),
            ("--output-topic", "STREAMREC_OUTPUT_TOPIC", "recommendations", "the worker's output topic"),
            ("--dlq-topic", "STREAMREC_DLQ_TOPIC", "events.dlq", "the worker's dead letters")):
        g.add_argument(flag, default=env_default(env, default), metavar="TOPIC",
                       help=f"{what} [{env}] (default %(default)s)")
    if partitions:
        g.add_argument("--partitions", type=int, default=int(env_default("STREAMREC_PARTITIONS", "8")), metavar="N",
                       help="partitions of input topics that have to be created [STREAMREC_PARTITIONS] "
                            "(default %(default)s)")
    add_security_flags(p)


def topics_of(args: argparse.Namespace):
    from streamrec.streams.replay import Topics

    names = (args.clicks_topic, args.browses_topic, args.output_topic, args.dlq_topic)
    if len(set(names)) != 4:
        raise CliError(f"the clicks, browses, output and dead-letter topics must differ, got {names}")
    return Topics(*names)


def parse_ts(text: str) -> int:
    """Epoch milliseconds, or an ISO 8601 date/time (UTC unless it says otherwise) -> epoch ms."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"--from-ts {text!r} is neither epoch milliseconds nor an ISO date/time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1000)


def run(args: argparse.Namespace) -> int:
    from streamrec.model.splits import cutoff
    from streamrec.streams.replay import ReplayConfig, ReplayError, plan, replay

    topics, security = topics_of(args), security_of(args)
    if args.partitions < 1 or (args.limit is not None and args.limit < 0) or args.hold_timeout <= 0:
        raise CliError("--partitions and --hold-timeout must be positive, --limit not negative")
    if args.rate is not None and args.rate <= 0:
        raise CliError(f"--rate {args.rate}: must be > 0 events/s (or use --max-speed)")
    events = load_events(args)
    from_ts = parse_ts(args.from_ts) if args.from_ts else None
    if args.cutoff:
        from_ts = cutoff([e.ts for e in events])
    messages = plan(events, topics, from_ts)[: args.limit]
    if not messages:
        raise CliError(f"no event at/after {from_ts}: nothing to replay")
    say = (lambda s: print(f"[replay] {s}", file=sys.stderr, flush=True))
    if from_ts is not None:
        say(f"{len(messages)} of {len(events)} events at/after ts={from_ts:.0f}")
    config = ReplayConfig(brokers=args.brokers, topics=topics, order=args.order, rate=args.rate,
                          hold_timeout=args.hold_timeout, partitions=args.partitions, linger_ms=args.linger_ms,
                          security=security)
    try:
        if args.log:
            with open(args.log, "w", encoding="utf-8") as log:
                summary = replay(messages, config, progress=not args.no_progress, log=log, say=say)
        else:
            summary = replay(messages, config, progress=not args.no_progress, say=say)
    except ReplayError as exc:
        raise CliError(str(exc)) from None
    doc = {**summary.to_dict(), "from_ts": from_ts, "brokers": args.brokers}
    if args.json:
        print(json.dumps(doc))
    else:
        print(f"sent {summary.sent} of {summary.events} events in {summary.seconds:.1f} s "
              f"({summary.rate:,.0f} events/s), {summary.failures} failures; per topic {summary.per_topic}")
        if summary.order == "strict":
            print(f"order strict: {summary.held} events waited for the worker, "
                  f"{summary.order_timeouts} waits timed out")
        for err in summary.errors:
            print(f"  failed: {err}")
    return 1 if summary.failures else 0
