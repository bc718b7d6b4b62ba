"""A seeded generator of realistic synthetic click/browse streams (torch-free).

For the demo and for the tests that must always run. What it builds in, so that a sequence
model has something to learn beyond popularity:
- long-tailed item popularity (Zipf within each topic);
- users with a few interests (topics) that drift from session to session;
- item-to-item sequential patterns: every item has a few likely successors, spread over
  topics, and a user follows the successors that match their current interests (so the
  best guess needs both the last item and the user's history: what a recurrent state holds);
- browse events more frequent than clicks (clicks follow browses of the same item);
- sessions separated by gaps of hours to days; seconds to minutes within a session.

    python -m model.synth --users 500 --items 300 --out demo.csv
"""
from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamrec.model.events import BROWSE, CLICK, Interaction

CSV_COLUMNS = "user_id=user_id,item_id=item_id,ts=ts:ms,event_type=event_type"


@dataclass(frozen=True)
class SynthConfig:
    users: int = 1000
    items: int = 500
    topics: int = 20
    interests: int = 3  # topics per user
    sessions: float = 5.0  # mean sessions per user
    session_len: float = 6.0  # mean events per session
    follow: float = 0.75  # chance the next event follows one of the current item's successors
    successors: int = 10  # per item, over different topics
    drift: float = 0.25  # chance per session that one interest is replaced
    click_share: float = 0.2  # chance that a browse is followed by a click on the same item
    start_ms: int = 1_700_000_000_000
    span_days: float = 60.0
    seed: int = 0


def generate(cfg: SynthConfig = SynthConfig()) -> list[Interaction]:
    rng = np.random.default_rng(cfg.seed)
    topic_of = rng.integers(0, cfg.topics, cfg.items)
    members = [np.flatnonzero(topic_of == t) for t in range(cfg.topics)]
    members = [m if len(m) else np.array([t % cfg.items]) for t, m in enumerate(members)]
    # Zipf popularity inside each topic, and topic sizes/popularity long-tailed too
    weight = 1.0 / (1.0 + rng.permutation(cfg.items)) ** 0.9
    topic_p = np.array([weight[m].sum() for m in members])
    topic_p /= topic_p.sum()
    member_p = [weight[m] / weight[m].sum() for m in members]
    # successors: each item leads to a few items, each in a different (random) topic
    succ = np.empty((cfg.items, cfg.successors), dtype=np.int64)
    for i in range(cfg.items):
        for j, topic in enumerate(rng.choice(cfg.topics, cfg.successors, replace=cfg.successors > cfg.topics)):
            succ[i, j] = rng.choice(members[topic], p=member_p[topic])
    succ_topic = topic_of[succ]

    events: list[Interaction] = []
    span_ms = int(cfg.span_days * 86_400_000)
    for u in range(cfg.users):
        uid = f"u{u}"
        interests = list(rng.choice(cfg.topics, size=min(cfg.interests, cfg.topics), replace=False, p=topic_p))
        t = cfg.start_ms + int(rng.integers(0, span_ms // 2))
        for _ in range(1 + rng.poisson(cfg.sessions - 1)):
            if rng.random() < cfg.drift:
                interests[rng.integers(len(interests))] = int(rng.choice(cfg.topics, p=topic_p))
            item = -1
            for _ in range(1 + rng.poisson(cfg.session_len - 1)):
                liked = np.flatnonzero(np.isin(succ_topic[item], interests)) if item >= 0 else []
                if len(liked) and rng.random() < cfg.follow:
                    item = int(succ[item, liked[rng.integers(len(liked))]])
                else:
                    topic = interests[rng.integers(len(interests))]
                    item = int(rng.choice(members[topic], p=member_p[topic]))
                t += int(rng.exponential(40_000)) + 1_000
                events.append(Interaction(uid, f"i{item}", BROWSE, t))
                if rng.random() < cfg.click_share:
                    t += int(rng.exponential(10_000)) + 500
                    events.append(Interaction(uid, f"i{item}", CLICK, t))
            t += int(rng.exponential(2 * 86_400_000)) + 3_600_000
    events.sort(key=lambda e: e.ts)
    return events


def write_csv(events: list[Interaction], path: str | Path) -> Path:
    """Write events as a CSV the ``csv`` loader reads with ``--columns`` :data:`CSV_COLUMNS`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "event_type", "ts"])
        for e in events:
            w.writerow([e.user_id, e.item_id, e.event_type, e.ts])
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=SynthConfig.users)
    ap.add_argument("--items", type=int, default=SynthConfig.items)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="CSV file to write")
    a = ap.parse_args(argv)
    ev = generate(SynthConfig(users=a.users, items=a.items, seed=a.seed))
    write_csv(ev, a.out)
    print(f"{len(ev)} events of {a.users} users over {a.items} items -> {a.out}")


if __name__ == "__main__":
    main()
