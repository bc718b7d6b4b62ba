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

compare mode (--shadow-topic T --shadow-bundle B2): a second worker (the shadow: another model
version on the same input topics, its own --app-id, publishing to T) is read in the same pass,
and both versions are shown side by side on the same events:

  events   each input event read: recommended by both versions, by one only, by neither
  targets  compared = the targets both versions answered (each had published a list for the user
           before the target event); the columns rank exactly these, so they compare like with like
  metrics  HR, NDCG, MRR of each on the compared targets; shadow - serving with a 95% paired
           bootstrap interval (an interval that contains 0: no evidence of a difference yet); the
           targets only one version had in its top 10
  latency  p50/p95/p99/max on the events both answered
  versions the model_version values each topic carried (one per topic, or a worker is stale)
Each version's own figures over all of its targets (equal to `evaluate --bundle` when complete)
are in the JSON report under "reports"; --compare-offline evaluates both bundles offline.
`replay --order strict` waits for the worker of --output-topic only: a shadow that falls behind it
may apply a user's click and browse out of time order (its report counts order_violations).

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
  compare the serving version with a shadow worker (another --app-id, --output-topic
  recommendations.shadow, --dlq-topic events.dlq.shadow), both reading the same replay:
  streamrec evaluate-live --data D --format recbole --brokers $BROKERS --bundle bundles/v1 \
                          --shadow-topic recommendations.shadow --shadow-bundle bundles/v2 \
                          --shadow-dlq-topic events.dlq.shadow --plots live/ --report live/compare.json
Exit status: 0 when every target and input was answered (in compare mode: by both versions), 1 when the timeout cut it short (the
report says what is missing), 2 on a usage error or when Kafka cannot be reached (a refused login
included).

""" + SECURITY_HELP + "\n" + FORMATS_HELP


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("evaluate-live", help="score the worker's published recommendations (TEMPORAL-stream)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, metavar="DIR",
                   help="the bundle the worker serves (its item vocabulary); in compare mode the serving worker's")
    add_data_flags(p, protocol=False)
    add_kafka_flags(p, partitions=False)
    c = p.add_argument_group("compare with a shadow worker")
    c.add_argument("--shadow-topic", metavar="TOPIC",
                   help="compare mode: also read the recommendations a second worker (another model version, "
                        "its own --app-id) publishes to TOPIC, e.g. recommendations.shadow, and show both "
                        "versions side by side on the events both answered")
    c.add_argument("--shadow-bundle", metavar="DIR", help="the bundle the shadow worker serves (required with "
                                                          "--shadow-topic)")
    c.add_argument("--shadow-dlq-topic", metavar="TOPIC",
                   help="the shadow worker's dead-letter topic (default: --dlq-topic; both workers reject the "
                        "same records)")
    g = p.add_argument_group("run and report")
    g.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="stop when nothing new arrived for S seconds (default 60)")
    g.add_argument("--compare-offline", action="store_true",
                   help="also evaluate the bundle offline (serving rule) and show both")
    g.add_argument("--json", action="store_true", help="print the report as one JSON object")
    g.add_argument("--report", metavar="FILE", help="write the JSON report to FILE")
    g.add_argument("--plots", metavar="DIR", help="write latency_cdf.png, throughput.png, hit_rate.png to DIR "
                                                  "(compare mode: compare.png)")
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
    check_compare_flags(args, topics)
    try:
        bundle = Bundle.load(args.bundle)
        shadow = Bundle.load(args.shadow_bundle) if args.shadow_topic else None
    except BundleError as exc:
        raise CliError(str(exc)) from None
    events = load_events(args)
    try:
        sp = split(events, "temporal")
    except ValueError as exc:
        raise CliError(str(exc)) from None
    say = (lambda s: print(f"[evaluate-live] {s}", file=sys.stderr, flush=True))
    if shadow is not None:
        return run_compare(args, topics, security, bundle, shadow, events, sp, say)
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


def check_compare_flags(args: argparse.Namespace, topics) -> None:
    if args.shadow_topic is None:
        if args.shadow_bundle or args.shadow_dlq_topic:
            raise CliError("--shadow-bundle and --shadow-dlq-topic go with --shadow-topic (compare mode)")
        return
    if not args.shadow_bundle:
        raise CliError("--shadow-topic needs --shadow-bundle DIR: the bundle the shadow worker serves")
    if args.shadow_topic in (topics.output, topics.clicks, topics.browses, topics.dlq):
        raise CliError(f"--shadow-topic {args.shadow_topic}: the shadow worker needs its own recommendations topic, "
                       "apart from the serving one, the input topics and the dead-letter topic "
                       "(e.g. `streamrec worker --output-topic recommendations.shadow`)")
    if args.shadow_dlq_topic in (topics.output, topics.clicks, topics.browses, args.shadow_topic):
        raise CliError(f"--shadow-dlq-topic {args.shadow_dlq_topic}: not a dead-letter topic")


def run_compare(args: argparse.Namespace, topics, security, bundle, shadow, events, sp, say) -> int:
    """Compare mode: the serving worker's and the shadow's recommendations, read in one pass."""
    from streamrec.cli.tables import metrics_table
    from streamrec.streams.live_compare import Side, build_comparison
    from streamrec.streams.live_eval import Lane, LiveLog, collect
    from streamrec.streams.live_report import comparison_text, write_comparison_plot
    from streamrec.streams.replay import ReplayError, event_id

    expected = [event_id(u, p) for u, p in sp.test]
    serving_log, shadow_log = LiveLog(expected), LiveLog(expected)
    lane = Lane(args.shadow_topic, args.shadow_dlq_topic or topics.dlq, shadow_log)
    try:
        collect(args.brokers, topics, serving_log, timeout=args.timeout, progress=not args.no_progress, say=say,
                security=security, also=[lane])
    except ReplayError as exc:
        raise CliError(str(exc)) from None
    sides = (Side("serving", topics.output, serving_log, bundle.items, bundle.k, bundle.version),
             Side("shadow", args.shadow_topic, shadow_log, shadow.items, shadow.k, shadow.version))
    cmp = build_comparison(*sides, sp)
    cmp.update(bundles={"serving": str(args.bundle), "shadow": str(args.shadow_bundle)},
               topics_read={**vars(topics), "shadow_output": lane.output, "shadow_dlq": lane.dlq})
    if args.compare_offline:
        cmp["offline"] = {"serving": offline_metrics(bundle, events), "shadow": offline_metrics(shadow, events)}
    if args.plots:
        cmp["plots"] = [str(write_comparison_plot(cmp, args.plots))]
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(cmp, indent=1) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(cmp))
    else:
        print(comparison_text(cmp))
        rows = {}
        for name in cmp["sides"]:
            rows[f"{name} live, all its targets"] = cmp["reports"][name]["metrics"]
            if "offline" in cmp:
                rows[f"{name} offline (bundle)"] = cmp["offline"][name]
        print()
        print(metrics_table(rows, ("HR@10", "NDCG@10", "MRR@10", "HR@20", "NDCG@20", "MRR@20")))
        for p in cmp.get("plots", []):
            print(f"plot: {p}")
    return 0 if cmp["complete"] else 1
