"""The canonical interaction record that training, replay and the streaming worker all speak.

Torch-free: imported by the worker.
"""
from __future__ import annotations

from dataclasses import dataclass

#: Event types every part knows by name. Data sets may carry others (cart, fav, purchase ...):
#: they keep their names and map to their own embedding when the model saw them in training,
#: else to the ``other`` slot.
CLICK = "click"
BROWSE = "browse"


@dataclass(frozen=True, slots=True)
class Interaction:
    """One user event: who, what, which kind, when (epoch milliseconds)."""

    user_id: str
    item_id: str
    event_type: str
    ts: int


def by_user(events: list[Interaction]) -> dict[str, list[Interaction]]:
    """Group events per user, each user's list sorted by time (stable: ties keep file order)."""
    groups: dict[str, list[Interaction]] = {}
    for e in events:
        groups.setdefault(e.user_id, []).append(e)
    for seq in groups.values():
        seq.sort(key=lambda e: e.ts)
    return groups
