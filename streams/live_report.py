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
