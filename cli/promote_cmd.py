"""``streamrec promote``: switch which model version publishes to ``recommendations`` (and back)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from streamrec.cli.common import SECURITY_HELP, add_security_flags
from streamrec.cli.main import CliError

DESCRIPTION = """\
Switch which of two running model versions publishes to the recommendations topic: the serving
version moves to the shadow topic and the shadow version to the recommendations topic, at an input
offset per partition that neither has reached. A rollback is the same command with the roles
named the other way round (the version that stood aside kept stepping every event: its states
are current).

  1. stop both workers (SIGTERM, Ctrl-C: each finishes what it took and commits)
  2. streamrec promote --serving-app-id A --serving-bundle bundles/v1 \\
                       --shadow-app-id B --shadow-bundle bundles/v2
  3. start both workers again with the commands they ran before

It reads both consumer groups' committed offsets; per input partition the switch offset is the
larger one. Each version's state table (its changelog) gets a route record per input partition:
below the switch offset a recommendation goes where that version published before, from it on to
the other topic. The version that was behind catches up to the switch offset where it published
before. So every event gets one recommendation in the recommendations topic, from one version or
the other (exactly-once: exactly one; at-least-once: an event finished but not committed before
the stop may be answered again, as after any restart), and the other version's in the shadow
topic; `model_version` in each message says which version answered. Events keep arriving in the
input topics meanwhile; the workers answer them once they are back.
"""

EPILOG = """\
refused: a consumer group with members (a worker still running, or killed with SIGKILL less than
--session-timeout ago), a version whose state table does not exist (wrong app id or bundle).

examples:
  streamrec promote --brokers $BROKERS --serving-app-id streamrec-worker --serving-bundle bundles/v1 \\
                    --shadow-app-id streamrec-shadow --shadow-bundle bundles/v2      (v2 now serves)
  streamrec promote --brokers $BROKERS --serving-app-id streamrec-shadow --serving-bundle bundles/v2 \\
                    --shadow-app-id streamrec-worker --shadow-bundle bundles/v1      (rollback to v1)

""" + SECURITY_HELP


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("promote", help="switch which model version publishes to recommendations (or roll back)",
                              description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    v = p.add_argument_group("the two versions")
    v.add_argument("--serving-app-id", required=True, metavar="ID",
                   help="--app-id of the worker that publishes to the recommendations topic now")
    v.add_argument("--serving-bundle", required=True, metavar="DIR", help="its bundle (for its model version)")
    v.add_argument("--shadow-app-id", required=True, metavar="ID",
                   help="--app-id of the worker that publishes to the shadow topic now")
    v.add_argument("--shadow-bundle", required=True, metavar="DIR", help="its bundle")
    k = p.add_argument_group("kafka")
    k.add_argument("--brokers", metavar="HOST:PORT[,..]", help="bootstrap servers [STREAMREC_BROKERS] "
                   "(default 127.0.0.1:9092)")
    k.add_argument("--clicks-topic", metavar="TOPIC", help="input topic of clicks [STREAMREC_CLICKS_TOPIC] (default clicks)")
    k.add_argument("--browses-topic", metavar="TOPIC", help="input topic of browses [STREAMREC_BROWSES_TOPIC] "
                   "(default browses)")
    k.add_argument("--partitions", metavar="N", help="partitions of the input topics [STREAMREC_PARTITIONS] (default 8)")
    k.add_argument("--output-topic", metavar="TOPIC", help="the recommendations topic [STREAMREC_OUTPUT_TOPIC] "
                   "(default recommendations)")
    k.add_argument("--shadow-topic", metavar="TOPIC", help="where the shadow publishes (default: the recommendations "
                   "topic + .shadow)")
    add_security_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from streamrec.export import contract
    from streamrec.export.manifest import Manifest
    from streamrec.streams.config import SECURITY_SETTINGS, ConfigError, WorkerConfig
    from streamrec.streams.route import Side, promote
    from streamrec.streams.security import unreachable

    versions = {}
    for role in ("serving", "shadow"):
        bundle = Path(getattr(args, f"{role}_bundle"))
        manifest = bundle / contract.MANIFEST_FILE
        if not manifest.is_file():
            raise CliError(f"--{role}-bundle {bundle} is not a bundle (no {contract.MANIFEST_FILE})")
        versions[role] = Manifest.from_json(manifest.read_text(encoding="utf-8")).model_version
    if args.serving_app_id == args.shadow_app_id:
        raise CliError("--serving-app-id and --shadow-app-id must differ: each version runs under its own app id")
    try:
        config = WorkerConfig.from_env(os.environ, bundle=args.serving_bundle, brokers=args.brokers,
                                       clicks_topic=args.clicks_topic, browses_topic=args.browses_topic,
                                       partitions=args.partitions, output_topic=args.output_topic,
                                       **{s.field: getattr(args, s.field) for s in SECURITY_SETTINGS})
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    shadow_topic = args.shadow_topic or f"{config.output_topic}.shadow"
    sides = [Side(args.serving_app_id, versions["serving"], config.output_topic, shadow_topic),
             Side(args.shadow_app_id, versions["shadow"], shadow_topic, config.output_topic)]
    try:
        switch = promote(config, sides)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    except KafkaError as exc:
        raise CliError(unreachable(config.brokers, config.security, exc)) from None
    print(f"[streamrec promote] {switch.describe()}", file=sys.stderr)
    return 0
