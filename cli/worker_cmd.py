"""``streamrec worker``: run the streaming worker (Faust) in this process until SIGINT/SIGTERM.

Flags win over ``STREAMREC_*`` environment variables (``streams/config.py``); a
``streams.worker.Worker`` is built from the resolved configuration and Faust's ``worker`` command
runs its app, as ``faust -A streamrec.streams.app worker`` does with the same settings from the environment.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from streamrec.cli.common import SECURITY_HELP, add_security_flags
from streamrec.cli.main import CliError

DESCRIPTION = """\
Consume click and browse events from Kafka, keep one LSTM state per user (RocksDB, changelogged
to Kafka), step the exported ONNX model once per event and publish the user's top-k list.

input   topics clicks, browses; key = user_id; value = JSON
          {"user_id": "u1", "item_id": "i42", "ts": 1700000000000,      (epoch ms)
           "event_type": "click",                                       (optional: the topic's kind)
           "event_id": "e-123"}                                         (optional: drops duplicates)
output  topic recommendations; key = user_id; value = JSON
          {"user_id", "items": [..], "scores": [..], "model_version",
           "source": {"topic", "partition", "offset"}, "event_ts", "emitted_ts"}
errors  topic events.dlq: each rejected event with a reason code (invalid_json, missing_field,
        unknown_event_type, bad_ts, key_mismatch, ...), a message and the original bytes (base64).
        Bad input never stops the worker.
http    GET /recommendations/{user_id}   the user's latest list (routed to the worker owning it)
        GET /health                      counters per outcome and per rejection reason
"""

EPILOG = """\
Every flag can also be set by the environment variable shown in [brackets]; a flag wins.
Input topics must have --partitions partitions (missing topics are created so). The state
table is named after the bundle's model version: a new model starts with fresh states.
Stop with Ctrl-C or SIGTERM: the worker finishes the events in flight and commits.

guarantees: at-least-once (default) may repeat a recommendation after a crash, with the same
  "source": consumers drop repeats by source. exactly-once uses Kafka transactions: consumers
  read with isolation.level=read_committed. Either way a user's state applies each event once.
a new model version: --warm-from 7d (with its own --app-id) steps the last 7 days of the input
  topics into its states before it answers, publishing nothing for them; then it serves. Run it
  beside the serving version with --output-topic recommendations.shadow to compare them first.
  (`streamrec worker` plans the warm-up; `faust -A streamrec.streams.app` does not.)
bounds: messages over 8,192 bytes, ids over 256 characters and timestamps outside 1973..2100
  (epoch ms) are dead-lettered; --state-ttl 30d expires idle users' states (tombstones).

examples:
  BROKERS=$(streamrec kafka start)
  streamrec worker --bundle bundles/m1 --brokers $BROKERS
  curl localhost:6066/recommendations/u1
  STREAMREC_BUNDLE=bundles/m1 STREAMREC_BROKERS=$BROKERS faust -A streamrec.streams.app worker   (same worker)

""" + SECURITY_HELP


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from streamrec.streams.config import SECURITY_FIELDS, SETTINGS, WorkerConfig

    parser = subparsers.add_parser(
        "worker", help="run the streaming worker: Kafka events -> per-user state -> top-k recommendations",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = {f: getattr(WorkerConfig, f, None) for f in (s.field for s in SETTINGS)}
    for s in (s for s in SETTINGS if s.field not in SECURITY_FIELDS):
        default = defaults[s.field]
        shown = ("required" if s.field == "bundle" else "the bundle's k" if s.field == "k" else
                 "none" if default is None else f"{1000 * default:g}" if s.field == "batch_wait" else
                 str(default).replace("_", "-"))
        parser.add_argument(s.flag, dest=s.field, metavar=s.metavar, default=None,
                            help=f"{s.help} [{s.env}] ({'' if shown == 'required' else 'default: '}{shown})")
    add_security_flags(parser)  # the same group as replay's and evaluate-live's
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from streamrec.export.manifest import BundleError
    from streamrec.streams.config import SETTINGS, ConfigError, WorkerConfig
    from streamrec.streams.faust_adapter import AdapterError
    from streamrec.streams.security import unreachable

    try:
        config = WorkerConfig.from_env(os.environ, **{s.field: getattr(args, s.field) for s in SETTINGS})
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if not (config.bundle / "manifest.json").is_file():
        raise CliError(f"{config.bundle} is not a bundle (no manifest.json): "
                       "make one with `streamrec export --model RUN --out DIR`")
    Path(config.data_dir).parent.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    os.environ.update(config.to_env())  # what faust -A streamrec.streams.app would read; Faust's own settings too
    try:
        from streamrec.streams.worker import Worker

        worker = Worker(config)
        worker.load_bundle()
        worker.ensure_topics()
        if config.warm_from is not None:
            from streamrec.streams.warm import resuming

            plan = worker.prepare_warm()
            print(f"[streamrec worker] {plan.describe() if plan else resuming(config.app_id)}", file=sys.stderr)
    except (ConfigError, BundleError, AdapterError) as exc:
        raise CliError(str(exc)) from None
    except KafkaError as exc:
        raise CliError(unreachable(config.brokers, config.security, exc)) from None
    # Faust's own command line parses sys.argv: hand it the `worker` command alone.
    # Faust spells the levels crit|error|warn|info|debug
    level = {"warning": "warn", "critical": "crit"}.get(config.log_level, config.log_level)
    sys.argv = ["streamrec worker", "worker", "--loglevel", level]
    try:
        worker.app.main()  # returns by SystemExit once the worker stopped
    except SystemExit as exc:
        if exc.code in (0, None):
            worker.mark_stopped()  # a clean stop: the next start may trust the local state (prepare_local_state)
        raise
    worker.mark_stopped()
    return 0
