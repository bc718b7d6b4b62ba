"""The printed table of the streaming benchmark (benchmarks/streaming.py), from its results document."""
from __future__ import annotations

from streaming_runs import fmt


def _batch_line(b: dict) -> str:
    if not b.get("reported"):
        return "not in /health (the worker steps one event at a time): batch 1 assumed"
    counts = ", ".join(f"<={k}: {v:,}" for k, v in b["counts"].items() if v)
    mean = (f"{fmt(b['mean_batch'], '.1f')} events per batch" if b.get("mean_batch") else
            f"~{fmt(b.get('mean_batch_estimate'), '.1f')} events per batch (estimated)")
    return f"{counts} batches; {mean}; the median event in bucket <={b['median_event_bucket']}"


def drain_lines(sec: dict) -> list[str]:
    lines = ["drain of a preloaded backlog (all events replayed first, then the worker started); events/s = "
             "(records - 1) / (last - first output's Kafka timestamp), records = recommendations + dead letters",
             f"{'guarantee':<15}{'events/s':>10}{'seconds':>9}{'from ready':>12}{'middle 80%':>12}{'records':>10}"
             f"{'dead l.':>9}{'dups':>6}{'ready s':>9}{'/batch 1':>10}  complete"]
    ratio = sec.get("ratio", {})
    for r in sec.get("drain", []):
        rd = r.get("read", {})
        lines.append(f"{r['guarantee']:<15}{fmt(r.get('events_per_s')):>10}{fmt(r.get('seconds'), '.1f'):>9}"
                     f"{fmt(r.get('from_ready', {}).get('events_per_s')):>12}"
                     f"{fmt(r.get('middle_80', {}).get('events_per_s')):>12}{fmt(rd.get('records'), ',d'):>10}"
                     f"{fmt(rd.get('dead_letters'), ',d'):>9}{fmt(rd.get('duplicates'), 'd'):>6}"
                     f"{fmt(r.get('worker_ready_s'), '.1f'):>9}"
                     f"{fmt(ratio.get(r['guarantee'], {}).get('to_batch1'), '.1%'):>10}  {rd.get('complete')}")
    for r in sec.get("drain", []):
        lines.append(f"  micro-batches, {r['guarantee']}: {_batch_line(r['batch_sizes'])}")
        cpu = r.get("wait", {}).get("cpu_us_per_event")
        if cpu is not None:  # without steal time: steadier than events/s on a shared VM
            lines.append(f"  worker CPU, {r['guarantee']}: {cpu:,.1f} us per event (user + system, ready to drained)")
    return lines


def ceiling_lines(sec: dict) -> list[str]:
    c = sec.get("ceiling")
    if not c:
        return []
    lines = [f"ceiling: the bare ONNX step, 1 thread, median of {c['repeats']} x {c['seconds']:g} s",
             f"{'batch':>7}{'events/s':>11}{'us/step':>10}"]
    for b, v in c["by_batch"].items():
        lines.append(f"{b:>7}{fmt(v['events_per_s']):>11}{fmt(v['us_per_step']):>10}")
    for g, r in sec.get("ratio", {}).items():
        at_median = "" if r["median_event_bucket"] == 1 else (
            f"; {fmt(r['to_median_bucket'], '.1%')} of batch {r['median_event_bucket']} (the median event's bucket)")
        lines.append(f"  drain / ceiling, {g}: {fmt(r['to_batch1'], '.1%')} of batch 1{at_median}")
    return lines


def latency_lines(sec: dict) -> list[str]:
    fr = sec.get("fixed_rate")
    if not fr or not fr.get("runs"):
        return []
    lines = [f"latency at fixed offered rates ({fr['guarantee']}, offered by a paced producer while the worker runs; shares of "
             f"{fmt(fr['max_events_per_s'])} events/s), produce -> publish",
             f"{'rate':>13}{'target/s':>10}{'events':>8}{'offered/s':>11}{'through/s':>11}{'p50 ms':>9}{'p95 ms':>9}"
             f"{'p99 ms':>9}{'max ms':>9}{'batch':>7}  complete  cores: worker/broker/generator, steal"]
    for r in fr["runs"]:
        lat = r["latency_ms"]
        what = f"{r['share']:.0%} of max" if r.get("share") is not None else "fixed"
        b = r.get("batch_sizes", {})
        lines.append(f"{what:>13}{fmt(r['offered_rate_target']):>10}{fmt(r.get('slice_events'), ',d'):>8}"
                     f"{fmt(r['replay']['rate']):>11}{fmt(r['events_per_s']):>11}{fmt(lat.get('p50'), ',.1f'):>9}"
                     f"{fmt(lat.get('p95'), ',.1f'):>9}{fmt(lat.get('p99'), ',.1f'):>9}{fmt(lat.get('max'), ',.0f'):>9}"
                     f"{('<=' + str(b.get('median_event_bucket')) if b.get('reported') else '1?'):>7}  {r['complete']!s:<8}"
                     f"  {_cores(r.get('cpu_cores'))}")
    return lines


def _cores(c: dict | None) -> str:
    """``cpu_cores`` of a live run (benchmarks/streaming_runs.py) as 0.91/0.74/0.12 (absent in older results)."""
    if not c:
        return "-"
    steal = f", {fmt(c['steal_share'], '.0%')}" if c.get("steal_share") is not None else ""
    return "/".join(fmt(c.get(k), ".2f") for k in ("worker", "broker", "generator")) + steal


def concurrent_lines(sec: dict) -> list[str]:
    if not sec.get("max_speed"):
        return []
    lines = ["replay at max speed while the worker runs (events/s from the first input to the last recommendation; "
             "latency here is a BACKLOG figure)",
             f"{'guarantee':<15}{'events/s':>10}{'seconds':>9}{'offered/s':>11}{'p50 ms':>9}{'p99 ms':>9}  complete"]
    for r in sec["max_speed"]:
        lat = r["latency_ms"]
        lines.append(f"{r['guarantee']:<15}{fmt(r['events_per_s']):>10}{fmt(r['seconds'], '.1f'):>9}"
                     f"{fmt(r['replay']['rate']):>11}{fmt(lat.get('p50')):>9}{fmt(lat.get('p99')):>9}  {r['complete']}")
    return lines


def section(sec: dict, title: str) -> list[str]:
    d, b = sec.get("data", {}), sec.get("bundle", {})
    name = d.get("name", d.get("source", "?"))
    if d.get("truncated_to"):
        name += f" ({d.get('replayed', 'the first events in time order')})"
    lines = [f"\n== {title}: {name}: {fmt(d.get('events'), ',d')} events, {fmt(d.get('users'), ',d')} users, "
             f"{fmt(d.get('items'), ',d')} items, types {d.get('event_types')}",
             f"bundle {b.get('model_version')} (n_items {fmt(b.get('n_items'), ',d')}, L{b.get('layers')} "
             f"H{b.get('hidden')}, k {b.get('k')}, m {b.get('m')}; trained {b.get('trained')}, "
             f"{b.get('train_seconds', 0)} s)"]
    for part in (drain_lines(sec), ceiling_lines(sec), latency_lines(sec), concurrent_lines(sec)):
        if part:
            lines += [""] + part
    return lines


def state_lines(doc: dict) -> list[str]:
    lines = []
    if doc.get("state"):
        s = doc["state"]
        p = s.get("packed", {})
        lines.append(f"\nstate per user: packed UserState {p.get('full_window')} B with a full window "
                     f"(L{p.get('layers')} H{p.get('hidden')}, m {p.get('m')}, k {p.get('k')}, {p.get('recent_ids')} ids; "
                     f"{p.get('initial')} B before any event)")
        r = s.get("rocksdb", {})
        if r.get("users"):
            lines.append(f"  in RocksDB after the {s.get('guarantee')} drain: {r['users']:,} users, mean value "
                         f"{r['mean_value_bytes']:,.0f} B + key {r['mean_key_bytes']:.1f} B; folder "
                         f"{r['dir_bytes'] / 1e6:,.2f} MB = {r['dir_bytes_per_user']:,.0f} B/user (RocksDB files, "
                         "WAL and fixed overhead of 8 partitions included)")
        elif r:
            lines.append(f"  RocksDB: {r}")
    if doc.get("recovery"):
        r = doc["recovery"]
        cl = r.get("changelog", {})
        lines.append(f"recovery ({r['guarantee']}): RocksDB folder deleted, same app id: ready in {r['ready_s']:.1f} s "
                     f"restoring {fmt(cl.get('records'))} changelog records; the same restart with the folder kept: "
                     f"{r['restart_with_state_ready_s']:.1f} s (restore ~{r['restore_s_estimate']:.1f} s); first start "
                     f"of that worker {r['fresh_start_ready_s']:.1f} s;\n  state of user {r['check']['user']} "
                     f"restored: {r['restored_state_ok']} "
                     f"({r['check']['events_in_restored_state']} of {r['check']['events_in_data']} events)")
    return lines


def load_lines(doc: dict) -> list[str]:
    """Load averages around every run: other jobs on the machine make timings noisy."""
    lines = ["\nload averages (1/5/15 min) before -> after each run:"]
    for key in ("main", "large"):
        sec = doc.get(key) or {}
        runs = sec.get("drain", []) + sec.get("max_speed", []) + sec.get("fixed_rate", {}).get("runs", [])
        for r in runs:
            lines.append(f"  {key:<6}{r['label']:<14}{str(r.get('loadavg_before')):<22} -> {r.get('loadavg_after')}")
        for c in sec.get("ceiling", {}).get("loadavg", []):
            lines.append(f"  {key:<6}{'ceiling':<14}{str(c['before']):<22} -> {c['after']}  (batches {c['batches']})")
    return lines


def table(doc: dict) -> str:
    m = doc.get("machine", {})
    lines = [f"\nstreaming benchmark: {doc.get('command')}",
             f"worker: 1 process, 8 partitions, ONNX Runtime 1 thread, flags {doc.get('worker_flags') or 'none'}; "
             f"machine: {m.get('nproc')} cores, load average at start {m.get('loadavg_start')} and at end "
             f"{m.get('loadavg_end')}"]
    if doc.get("main", {}).get("data"):
        lines += section(doc["main"], "main")
        lines += state_lines(doc)
    if doc.get("large", {}).get("data"):
        lines += section(doc["large"], "Beauty-sized")
    lines += load_lines(doc)
    for e in doc.get("errors", []):
        lines.append(f"\nFAILED {e['step']}: {e['error'].splitlines()[0] if e['error'] else ''}")
    lines.append(f"\ntotal {doc.get('total_seconds', 0):.0f} s; {doc.get('results_file')}")
    return "\n".join(lines)
