"""``streamrec evaluate-live``: score the recommendations the worker published during a replay."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streamrec.cli.common import SECURITY_HELP, add_data_flags, load_events, security_of
from streamrec.cli.main import CliError
from streamrec.cli.replay_cmd import FORMATS_HELP, add_kafka_flags, topics_of

DESCRIPTION = """\
Read the input topics, the recommendations topic and the dead-letter topic from the beginning
(isolation.level=read_committed), while `streamrec replay` runs or after it, until every
TEMPORAL-stream test target of the data set has its recommendation and every input read has an
answer, or nothing new arrived for --timeout seconds. Then score it like offline evaluation:

  target   every event at/after the cutoff T (90th percentile of timestamps) of a user with an
           event before T; an item unseen before T (out of the bundle's vocabulary) is a miss
  shown    the list the worker published for that user just before the one it published for
           the target event (= the recommendation of the user's previous event when the worker
           applied the user's events in time order; `replay --order strict` makes sure of it)
  rank     the item's place in that list, strict-above ties; absent = miss
  metrics  HR, NDCG, MRR @10 (and @20 when the bundle's k >= 20): the same numbers as
           `streamrec evaluate --bundle B --protocol temporal` (serving rule) on the same data

Matching is by the `source` coordinates of each recommendation and the `event_id` of the input
at those coordinates (`streamrec replay` sets it). Also reported: counts (inputs, recommendations,
duplicates = the same source twice, scored once; dead letters; order violations), latency
percentiles (input record timestamp -> recommendation record timestamp, ms) and throughput
(events/s from the first input to the last recommendation, and per second).
"""

EPILOG = """\
environment (a flag wins): STREAMREC_BROKERS, STREAMREC_CLICKS_TOPIC, STREAMREC_BROWSES_TOPIC,
STREAMREC_OUTPUT_TOPIC, STREAMREC_DLQ_TOPIC, and the kafka security variables below (as for
streamrec replay and streamrec worker).
The topics are read from their beginning: use fresh topics (or a fresh broker) per experiment.

examples:
  streamrec replay        --data D --format recbole --brokers $BROKERS
  streamrec evaluate-live --data D --format recbole --brokers $BROKERS --bundle bundles/ml \\
                          --plots live/ --report live/report.json --compare-offline
  streamrec evaluate-live --data D --format recbole --bundle bundles/ml --json --timeout 30
Exit status: 0 when every target and input was answered, 1 when the timeout cut it short (the
report says what is missing), 2 on a usage error or when Kafka cannot be reached (a refused login
included).

""" + SECURITY_HELP + "\n" + FORMATS_HELP


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("evaluate-live", help="score the worker's published recommendations (TEMPORAL-stream)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, metavar="DIR", help="the bundle the worker serves (its item vocabulary)")
    add_data_flags(p, protocol=False)
    add_kafka_flags(p, partitions=False)
    g = p.add_argument_group("run and report")
    g.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="stop when nothing new arrived for S seconds (default 60)")
    g.add_argument("--compare-offline", action="store_true",
                   help="also evaluate the bundle offline (serving rule) and show both")
    g.add_argument("--json", action="store_true", help="print the report as one JSON object")
    g.add_argument("--report", metavar="FILE", help="write the JSON report to FILE")
    g.add_argument("--plots", metavar="DIR", help="write latency_cdf.png, throughput.png, hit_rate.png to DIR")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from streamrec.export.manifest import BundleError
    from streamrec.export.runtime import Bundle
    from streamrec.model.splits import split
    from streamrec.streams.live_eval import LiveLog, build_report, collect
    from streamrec.streams.live_report import summary_text, write_plots
    from streamrec.streams.replay import ReplayError, event_id

    if args.timeout <= 0:
        raise CliError(f"--timeout {args.timeout}: must be > 0 seconds")
    topics = topics_of(args)
    security = security_of(args)
    try:
        bundle = Bundle.load(args.bundle)
    except BundleError as exc:
        raise CliError(str(exc)) from None
    events = load_events(args)
    try:
        sp = split(events, "temporal")
    except ValueError as exc:
        raise CliError(str(exc)) from None
    say = (lambda s: print(f"[evaluate-live] {s}", file=sys.stderr, flush=True))
    log = LiveLog(event_id(u, p) for u, p in sp.test)
    try:
        collect(args.brokers, topics, log, timeout=args.timeout, progress=not args.no_progress, say=say,
                security=security)
    except ReplayError as exc:
        raise CliError(str(exc)) from None
    report = build_report(log, sp, bundle.items, bundle.k, bundle.version)
    report.update(bundle=str(args.bundle), model_version=bundle.version, topics=vars(topics))
    if args.compare_offline:
        report["offline"] = offline_metrics(bundle, events)
    if args.plots:
        report["plots"] = [str(p) for p in write_plots(report, args.plots)]
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(report))
    else:
        from streamrec.cli.tables import metrics_table

        rows = {"live": report["metrics"]}
        if "offline" in report:
            rows["offline (bundle)"] = report["offline"]
        print(metrics_table(rows, ("HR@10", "NDCG@10", "MRR@10", "HR@20", "NDCG@20", "MRR@20")))
        print(summary_text(report))
        for p in report.get("plots", []):
            print(f"plot: {p}")
    return 0 if report["complete"] else 1


def offline_metrics(bundle, events) -> dict:
    """What `streamrec evaluate --bundle --protocol temporal` reports (serving rule)."""
    from streamrec.export.bundle_eval import evaluate_bundle_on

    return evaluate_bundle_on(bundle, events, "temporal")["model"]
