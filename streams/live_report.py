"""How a live evaluation report (``streams.live_eval.build_report``) is shown: a terminal summary
and PNG plots (matplotlib, Agg backend; imported only when plots are asked for)."""
from __future__ import annotations

from pathlib import Path


def summary_text(report: dict) -> str:
    """Counts, latency and throughput, a few lines (the metrics table is the CLI's)."""
    lines = []
    c, lat, tp = report["counts"], report["latency_ms"], report["throughput"]
    lines.append(f"inputs {c['inputs']}, recommendations {c['recommendations']} (+{c['duplicates']} duplicates), "
                 f"dead letters {c['rejected']}, targets {c['targets']}"
                 + ("" if report["complete"] else
                    f"; INCOMPLETE: {c['expected_not_read']} targets not read, "
                    f"{c['inputs_unanswered']} inputs unanswered"))
    keys = ("order_violations", "targets_unanswered", "targets_without_list", "content_mismatches",
            "duplicate_inputs", "outputs_of_other_models", "unreadable")
    problems = {k: c[k] for k in keys if c.get(k)}
    if problems:
        lines.append("attention: " + ", ".join(f"{k} {v}" for k, v in problems.items()))
    if lat.get("n"):
        lines.append(f"latency ms (produce -> publish): p50 {lat['p50']:.0f}, p95 {lat['p95']:.0f}, "
                     f"p99 {lat['p99']:.0f}, max {lat['max']:.0f} over {lat['n']} events")
    if tp.get("outputs"):
        lines.append(f"throughput: {tp['events_per_s']:,.0f} events/s ({tp['outputs']} recommendations in "
                     f"{tp['seconds']:.1f} s from the first input to the last recommendation)")
    return "\n".join(lines)


def write_plots(report: dict, out_dir: str | Path) -> list[Path]:
    """latency_cdf.png, throughput.png, hit_rate.png in ``out_dir``; returns their paths. Optional
    report keys: ``latency_cdf_title``, ``throughput_marks`` ([(label, events/s)], drawn as lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    cdf = report.get("latency_cdf_ms") or []
    fig, ax = plt.subplots(figsize=(6, 4))
    if cdf:
        ax.plot(cdf, [q / 100 for q in range(len(cdf))])
        lat = report["latency_ms"]
        for q in ("p50", "p95", "p99"):
            ax.axvline(lat[q], color="grey", ls="--", lw=1)
            ax.text(lat[q], 0.02, f" {q} {lat[q]:.0f}", rotation=90, va="bottom", fontsize=8)
    ax.set(xlabel="latency, produce -> recommendation published (ms)", ylabel="share of events",
           title=report.get("latency_cdf_title", "latency CDF"), ylim=(0, 1))
    paths.append(_save(fig, out / "latency_cdf.png"))

    tp = report["throughput"]
    fig, ax = plt.subplots(figsize=(6, 4))
    per_s = tp.get("per_second") or []
    ax.plot(range(len(per_s)), per_s, drawstyle="steps-post")
    if per_s:
        ax.axhline(tp["events_per_s"], color="grey", ls="--", lw=1, label=f"mean {tp['events_per_s']:,.0f}/s")
        for (label, value), color in zip(report.get("throughput_marks", ()), ("tab:red", "tab:green", "tab:purple")):
            ax.axhline(value, color=color, ls=":", lw=1, label=label)  # e.g. the demo's drain and paced rates
        ax.legend()
    ax.set(xlabel="seconds since the first input", ylabel="recommendations per second", title="throughput")
    paths.append(_save(fig, out / "throughput.png"))

    bins = report.get("hit_rate_over_time") or []
    fig, ax = plt.subplots(figsize=(6, 4))
    if bins:
        t0 = report["cutoff_ts"] or bins[0]["from_ts"]
        mid = [((b["from_ts"] + b["to_ts"]) / 2 - t0) / 86_400_000 for b in bins]
        ax.plot(mid, [b["HR@10"] for b in bins], marker="o", label="HR@10 per slice")
        ax.axhline(report["metrics"].get("HR@10", 0.0), color="grey", ls="--", lw=1, label="overall")
        ax.legend()
    ax.set(xlabel="event time, days after the cutoff T", ylabel="HR@10", title="hit rate over time (live)")
    paths.append(_save(fig, out / "hit_rate.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# ---- two versions side by side (streams.live_compare.build_comparison) ------------------------------
def comparison_text(cmp: dict) -> str:
    """The side-by-side table of a comparison: metrics on the targets both versions answered, the
    difference with its 95% interval, latency on the events both answered, the versions seen."""
    a, b = cmp["sides"]
    ev, tg = cmp["events"], cmp["targets"]
    seen = {s: ", ".join(f"{v} ({n:,})" for v, n in cmp["model_versions_seen"][s].items()) or "none" for s in (a, b)}
    w = max(14, *(len(cmp["model_version"][s]) + 2 for s in (a, b)))
    lines = [f"{s}: topic {cmp['topics'][s]}, model_version {cmp['model_version'][s]}" for s in (a, b)]
    lines.append(f"events read {ev['inputs']:,}: recommended by both {ev['both']:,}, only {a} {ev[f'only_{a}']:,}, "
                 f"only {b} {ev[f'only_{b}']:,}, neither {ev['neither']:,} (dead letters {a} "
                 f"{ev[f'dead_letters_{a}']:,}, {b} {ev[f'dead_letters_{b}']:,})")
    lines.append(f"targets {tg['total']:,}: compared (both answered, after a list) {tg['both']:,}, only {a} "
                 f"{tg[f'only_{a}']:,}, only {b} {tg[f'only_{b}']:,}, neither {tg['neither']:,}")
    head = f"{'':<22}{a:>{w}}{b:>{w}}   {cmp['difference_of']} [95% CI]"
    lines += ["", head, "-" * len(head)]
    ma, mb = cmp["metrics"][a], cmp["metrics"][b]
    for key, d in cmp["difference"].items():
        lo, hi = d["ci95"]
        lines.append(f"{key:<22}{ma[key]:>{w}.4f}{mb[key]:>{w}.4f}   {d['value']:+.4f} [{lo:+.4f}, {hi:+.4f}]")
    for key, v in cmp.items():
        if key.startswith("hits_at_") and key.endswith("_only"):
            lines.append(f"{'top-' + key.split('_')[2] + ' hits only here':<22}{v[a]:>{w},}{v[b]:>{w},}")
    la, lb = cmp["latency_ms"][a], cmp["latency_ms"][b]
    for q in ("p50", "p95", "p99", "max"):
        if la.get("n") and lb.get("n"):
            lines.append(f"{'latency ' + q + ' ms':<22}{la[q]:>{w},.0f}{lb[q]:>{w},.0f}")
    reports = cmp["reports"]
    lines.append(f"{'complete':<22}{_yes(reports[a]['complete']):>{w}}{_yes(reports[b]['complete']):>{w}}")
    lines.append("")
    lines += [f"{s} topic carried: {seen[s]}" for s in (a, b)]
    for s in (a, b):
        lines += [f"{s}: {line}" for line in summary_text(reports[s]).splitlines()]
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def write_comparison_plot(cmp: dict, out_dir: str | Path) -> Path:
    """compare.png in ``out_dir``: the metrics side by side (with the difference's interval), the
    latency CDFs on the events both answered, HR@10 over event time on the targets both answered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a, b = cmp["sides"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))

    ax = axes[0]
    keys = list(cmp["difference"])
    x = range(len(keys))
    for off, s in ((-0.2, a), (0.2, b)):
        ax.bar([i + off for i in x], [cmp["metrics"][s][k] for k in keys], width=0.4,
               label=f"{s} ({cmp['model_version'][s]})")
    for i, k in enumerate(keys):
        d = cmp["difference"][k]
        ax.text(i, max(cmp["metrics"][a][k], cmp["metrics"][b][k]), f"{d['value']:+.3f}\n[{d['ci95'][0]:+.3f}, "
                f"{d['ci95'][1]:+.3f}]", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(x), keys, rotation=30, fontsize=8)
    ax.set(title=f"on the {cmp['targets']['both']:,} targets both answered ({cmp['difference_of']}, 95% CI)")
    ax.margins(y=0.25)
    ax.legend(fontsize=7)

    ax = axes[1]
    for s in (a, b):
        cdf = cmp["latency_cdf_ms"][s]
        if cdf:
            lat = cmp["latency_ms"][s]
            ax.plot(cdf, [q / 100 for q in range(len(cdf))],
                    label=f"{s}: p50 {lat['p50']:.0f}, p95 {lat['p95']:.0f}, p99 {lat['p99']:.0f} ms")
    ax.set(xlabel="latency, produce -> recommendation published (ms)", ylabel="share of events", ylim=(0, 1),
           title=f"latency on the {cmp['events']['both']:,} events both answered")
    ax.legend(fontsize=7)

    ax = axes[2]
    for s in (a, b):
        bins = cmp["hit_rate_over_time"][s]
        if bins:
            t0 = bins[0]["from_ts"]
            ax.plot([((x["from_ts"] + x["to_ts"]) / 2 - t0) / 86_400_000 for x in bins], [x["HR@10"] for x in bins],
                    marker="o", label=s)
    ax.set(xlabel="event time, days after the first compared target", ylabel="HR@10", title="HR@10 over time")
    ax.legend(fontsize=7)
    return _save(fig, out / "compare.png")
