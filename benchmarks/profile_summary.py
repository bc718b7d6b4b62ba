"""Summarise a py-spy profile of the worker: where the event loop's time goes, by category.

    py-spy record -r 200 --format raw -o worker.raw -d 30 -- streamrec worker ...   # while it drains a backlog
    ./run python benchmarks/profile_summary.py worker.raw [--json out.json] [--top 15]

Input: py-spy's ``--format raw`` output (collapsed stacks: ``frame;frame;... count``). Only the
main thread's samples of the running worker count (start-up, imports and idle waits in
``select``/``epoll`` are reported apart). Each sample is put in the first category whose pattern
matches its stack, scanning the categories in the order listed in ``CATEGORIES`` (so the ONNX
step counts as ONNX even though Faust called it); the rest is "other Python".
"""
from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

#: (category, regex over the whole stack), first match wins.
CATEGORIES: list[tuple[str, str]] = [
    ("start-up (imports, bundle load)", r"_find_and_load|Bundle\.load|load_bundle \("),
    ("idle (waiting for events or Kafka)", r"(select|poll|epoll)\b[^;]*\([^;]*selectors\.py[^;]*$|"
                                            r"BaseSelectorEpoll|EpollSelector\.select|concurrent/futures/thread\.py:\d+\)$"),
    ("ONNX step (onnxruntime run)", r"InferenceSession\.run|Bundle\.(step|run)\b"),
    ("Faust consumer, conductor and stream per record", r"faust/(transport/(consumer|conductor)|streams|channels|"
                                                        r"_cython|events)|mode/services\.py:\d+\);Service\.wait_first"),
    ("produce (aiokafka send, batches, socket writes)", r"aiokafka/(producer|protocol|conn|client)|send_records|"
                                                        r"send_batch|Batcher\."),
    ("consume (aiokafka fetch and decode)", r"aiokafka/(consumer|record)"),
    ("RocksDB table reads and writes", r"faust/stores|rocksdict|put_local|_db_for_partition|read_states|"
                                       r"write_states"),
    ("state unpack/pack (UserState)", r"streams/state\.py"),
    ("JSON decode/encode and validation (codec)", r"streams/codec\.py|json/(decoder|encoder|__init__)"),
    ("per-event logic (process, top-k, runs)", r"streams/logic\.py"),
    # (not "complete \(": that matched asyncio's run_until_complete, the root of every stack, and made this
    # category hold every sample that no earlier one took)
    ("sequencing and completions", r"streams/(sequencer|progress|pipeline)\.py|Publisher\._complete \(|"
                                   r"_store_when_written \("),
    # the leaf frame only: every stack has asyncio's run_forever at its root
    ("asyncio scheduling", r"asyncio/(base_events|events|tasks|futures|queues|locks|mixins|selector_events)\.py:\d+\)$"),
]


def load(path: Path) -> list[tuple[str, int]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack, int(count)))
    return out


def summarise(stacks: list[tuple[str, int]], top: int = 15) -> dict:
    compiled = [(name, re.compile(rx)) for name, rx in CATEGORIES]
    by_cat: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for stack, n in stacks:
        cat = next((name for name, rx in compiled if rx.search(stack)), "other Python")
        by_cat[cat] += n
        if not cat.startswith(("start-up", "idle")):
            leaf[stack.rsplit(";", 1)[-1]] += n
    total = sum(by_cat.values())
    busy = total - by_cat["start-up (imports, bundle load)"] - by_cat["idle (waiting for events or Kafka)"]
    rows = [{"category": c, "samples": n, "share_of_busy": round(n / busy, 4) if busy else None}
            for c, n in by_cat.most_common() if not c.startswith(("start-up", "idle"))]
    return {"samples": total, "busy_samples": busy,
            "idle_samples": by_cat["idle (waiting for events or Kafka)"],
            "startup_samples": by_cat["start-up (imports, bundle load)"],
            "categories": rows,
            "top_leaf_frames": [{"frame": f, "samples": n, "share_of_busy": round(n / busy, 4) if busy else None}
                                for f, n in leaf.most_common(top)]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("raw", type=Path, help="py-spy --format raw output")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    ap.add_argument("--top", type=int, default=15, help="how many leaf frames to list (default 15)")
    a = ap.parse_args()
    doc = summarise(load(a.raw), a.top)
    doc["source"] = str(a.raw)
    print(f"{doc['samples']:,} samples; busy {doc['busy_samples']:,}, idle {doc['idle_samples']:,}, "
          f"start-up {doc['startup_samples']:,}")
    print(f"{'share of busy':>14}  category")
    for row in doc["categories"]:
        print(f"{100 * row['share_of_busy']:13.1f}%  {row['category']}")
    print(f"\n{'share of busy':>14}  leaf frame")
    for row in doc["top_leaf_frames"]:
        print(f"{100 * row['share_of_busy']:13.1f}%  {row['frame']}")
    if a.json:
        a.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
