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

without a data set (--since WHEN instead of --data/--format): the events come from the input
topics themselves (up to their ends when the read starts), so live traffic that no replay named
can be scored, e.g. a shadow beside the serving worker in production. The same rule with
T = WHEN: every event whose ts is at/after WHEN, of a user with an event before it in the topics,
is a target, scored against the list the worker published for that user just before it; only
the events at/after WHEN are waited for (a shadow started with --warm-from publishes nothing for
the events before its start: compare it with a WHEN after its start). When
the topics hold every user's whole history (a replay into fresh topics), the figures equal the
bundles evaluated offline over the same events with that T (--compare-offline); on production
topics the states also hold events older than the topics keep, and the figures are the model's
online ones.

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
  the same on production traffic, the last 2 hours' events as targets (no data set):
  streamrec evaluate-live --since 2h --brokers $BROKERS --bundle bundles/v1 \
                          --shadow-topic recommendations.shadow --shadow-bundle bundles/v2 \
                          --shadow-dlq-topic events.dlq.shadow
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
    add_data_flags(p, required=False, protocol=False)
    p.add_argument("--since", metavar="WHEN",
                   help="instead of --data: the targets are the events the input topics hold whose event time "
                        "(ts) is at/after WHEN (2h, 90m, 7d back from now, an ISO time or epoch ms), of users with an "
                        "event there before it; reads the input topics up to their ends at the start (live traffic)")
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
    from streamrec.streams.live_eval import build_report
    from streamrec.streams.live_report import summary_text, write_plots

    if args.timeout <= 0:
        raise CliError(f"--timeout {args.timeout}: must be > 0 seconds")
    if (args.since is None) == (args.data is None) or (args.data is not None and args.fmt is None):
        raise CliError("give either --data PATH --format FMT (the data set `streamrec replay` sent) or --since WHEN "
                       "(score the events the input topics hold, at/after WHEN)")
    topics = topics_of(args)
    security = security_of(args)
    check_compare_flags(args, topics)
    try:
        bundle = Bundle.load(args.bundle)
        shadow = Bundle.load(args.shadow_bundle) if args.shadow_topic else None
    except BundleError as exc:
        raise CliError(str(exc)) from None
    log, shadow_log, sp, offline = read(args, topics, security, bundle, shadow)
    if shadow is not None:
        return report_compare(args, topics, bundle, shadow, log, shadow_log, sp, offline)
    report = build_report(log, sp, bundle.items, bundle.k, bundle.version)
    report.update(bundle=str(args.bundle), model_version=bundle.version, topics=vars(topics),
                  targets_from="data" if args.data else "topics")
    if args.compare_offline:
        report["offline"] = offline(bundle)
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


def read(args: argparse.Namespace, topics, security, bundle, shadow):
    """Read the topics (and the shadow's): (log, shadow log or None, the split scored, offline(bundle) ->
    the same targets evaluated offline). With --data the targets are the data set's; with --since
    they are the events read from the input topics (streams/live_stream.py)."""
    from streamrec.model.splits import split
    from streamrec.streams.live_collect import Lane, collect
    from streamrec.streams.live_eval import LiveLog
    from streamrec.streams.live_stream import parse_since, relabel, stream_split
    from streamrec.streams.replay import ReplayError, event_id

    since = None
    if args.since is not None:
        try:
            since = parse_since(args.since)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        expected: list[str] = []
    else:
        events = load_events(args)
        try:
            sp = split(events, "temporal")
        except ValueError as exc:
            raise CliError(str(exc)) from None
        expected = [event_id(u, p) for u, p in sp.test]
    say = (lambda s: print(f"[evaluate-live] {s}", file=sys.stderr, flush=True))
    awaited = None if since is None else (lambda rec: rec.ts >= since)  # --since: the targets' time only
    log = LiveLog(expected, awaited)
    shadow_log = LiveLog(expected, awaited) if shadow is not None else None
    lanes = [] if shadow_log is None else [Lane(args.shadow_topic, args.shadow_dlq_topic or topics.dlq, shadow_log)]
    try:
        collect(args.brokers, topics, log, timeout=args.timeout, progress=not args.no_progress, say=say,
                security=security, also=lanes, upto_now=since is not None)
    except ReplayError as exc:
        raise CliError(str(exc)) from None
    if since is None:
        return log, shadow_log, sp, lambda b: offline_metrics(b, events)
    kind_of = (lambda t: "browse" if t == topics.browses else "click")  # noqa: E731 - the worker's default
    log, events = relabel(log, kind_of)
    if shadow_log is not None:
        shadow_log, _ = relabel(shadow_log, kind_of)
    sp = stream_split(events, since)
    if not sp.test:
        raise CliError(f"--since {args.since}: no targets among the {len(events):,} events read (none of a user with "
                       "events both before and at/after that time): choose another time")
    return log, shadow_log, sp, lambda b: offline_on_split(b, sp)


def offline_metrics(bundle, events) -> dict:
    """What `streamrec evaluate --bundle --protocol temporal` reports (serving rule)."""
    from streamrec.export.bundle_eval import evaluate_bundle_on

    return evaluate_bundle_on(bundle, events, "temporal")["model"]


def offline_on_split(bundle, sp) -> dict:
    """The bundle stepped offline over the split's sequences, on its targets (serving rule): the
    --since mode's counterpart of `streamrec evaluate --bundle`."""
    from streamrec.export.bundle_eval import evaluate_bundle
    from streamrec.model.encode import build_targets, encode_all

    encoded = encode_all(sp.sequences, bundle.items, bundle.types)
    return evaluate_bundle(bundle, encoded, build_targets(encoded, sp.test, bundle.manifest.m))


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


def report_compare(args: argparse.Namespace, topics, bundle, shadow, serving_log, shadow_log, sp, offline) -> int:
    """Compare mode: the serving worker's and the shadow's recommendations side by side."""
    from streamrec.cli.tables import metrics_table
    from streamrec.streams.live_compare import Side, build_comparison
    from streamrec.streams.live_report import comparison_text, write_comparison_plot

    sides = (Side("serving", topics.output, serving_log, bundle.items, bundle.k, bundle.version),
             Side("shadow", args.shadow_topic, shadow_log, shadow.items, shadow.k, shadow.version))
    cmp = build_comparison(*sides, sp)
    cmp.update(bundles={"serving": str(args.bundle), "shadow": str(args.shadow_bundle)},
               topics_read={**vars(topics), "shadow_output": args.shadow_topic,
                            "shadow_dlq": args.shadow_dlq_topic or topics.dlq},
               targets_from="data" if args.data else "topics")
    if args.compare_offline:
        cmp["offline"] = {"serving": offline(bundle), "shadow": offline(shadow)}
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
