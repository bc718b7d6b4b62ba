"""Event-log loaders: public recommendation data sets -> ``list[Interaction]``.

``load(path, fmt)`` reads one of ``FORMATS`` and returns events in file order (``by_user``
sorts them per user). Timestamps become epoch milliseconds; order-only formats get synthetic,
monotone ones. Torch-free. Print a data set's statistics with::

    python -m model.data PATH FORMAT [COLUMNS]

What is skipped, on purpose: blank (or whitespace-only) lines, and header rows. Anything else
that cannot be read raises ``DataError`` naming the file and line; nothing is dropped silently.
"""
from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

from streamrec.model.events import BROWSE, CLICK, Interaction

#: fmt -> one-line description (for ``--help``).
FORMATS: dict[str, str] = {
    "recbole": "RecBole atomic .inter file: tab-separated, header of name:type fields, timestamp in s",
    "sequences": "one line per user, 'user item item ...' in time order (order only, e.g. Beauty.txt)",
    "pairs": "one 'user item' pair per line, in time order (order only)",
    "gru4rec": "tab-separated SessionId ItemId Time(s) with header; a directory loads *_train_full + *_test",
    "taobao": "UserBehavior.csv, no header: user,item,category,behavior,ts(s); pv -> browse",
    "diginetica": "';'-separated session_id;user_id;item_id;timeframe;eventdate; the session is the user",
    "csv": "delimited file with header; --columns user_id=COL,item_id=COL[,ts=COL:s|ms][,event_type=COL]",
}

#: Synthetic clock of order-only formats: a user's k-th event (k = 0, 1, ...) gets
#: BASE + k * STEP, so order is exact and gaps are constant.
SYNTHETIC_BASE_MS = 1_000_000_000_000  # 2001-09-09T01:46:40Z
SYNTHETIC_STEP_MS = 1_000

COLUMN_KEYS = ("user_id", "item_id", "ts", "event_type", "ts_unit")
TS_UNITS = ("s", "ms")
TAOBAO_BEHAVIORS = {"pv": BROWSE, "cart": "cart", "fav": "fav", "buy": "buy"}
_EPOCH = dt.date(1970, 1, 1)
_DAY_MS = 86_400_000


class DataError(ValueError):
    """Input that cannot be read; the message names the file and line (1-based, header included)."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None, line: int | None = None):
        where = "" if path is None else (f"{path}:{line}: " if line else f"{path}: ")
        super().__init__(where + message)
        self.path = None if path is None else Path(path)
        self.line = line


def parse_columns(spec: str) -> dict[str, str]:
    """Parse a CLI column mapping ``user_id=uid,item_id=iid,ts=time:s,event_type=type``.

    ``ts=COL:UNIT`` (UNIT in s, ms) yields ``{"ts": COL, "ts_unit": UNIT}``; ``ts_unit=ms`` may also
    be given on its own.
    """
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not value:
            raise DataError(f"column mapping {part!r} is not KEY=COLUMN (in {spec!r})")
        if key not in COLUMN_KEYS:
            raise DataError(f"unknown column key {key!r} in {spec!r}; keys are {', '.join(COLUMN_KEYS)}")
        if key == "ts" and value.rpartition(":")[2] in TS_UNITS and ":" in value:
            value, _, out["ts_unit"] = value.rpartition(":")
        out[key] = value
    return _check_columns(out)


def _check_columns(columns: Mapping[str, str]) -> dict[str, str]:
    cols = dict(columns)
    unknown = sorted(set(cols) - set(COLUMN_KEYS))
    if unknown:
        raise DataError(f"unknown column keys {unknown}; keys are {', '.join(COLUMN_KEYS)}")
    if cols.get("ts_unit", "s") not in TS_UNITS:
        raise DataError(f"ts_unit must be one of {TS_UNITS}, not {cols['ts_unit']!r}")
    return cols


def load(
    path: str | os.PathLike[str],
    fmt: str,
    *,
    columns: Mapping[str, str] | str | None = None,
    sep: str | None = None,
    limit: int | None = None,
) -> list[Interaction]:
    """Read the events of ``path`` (a file, or a directory holding one) in format ``fmt``.

    ``columns`` maps canonical keys (``user_id``, ``item_id``, ``ts``, ``event_type``, ``ts_unit``)
    to header names; it is required for ``csv`` and may rename fields of ``recbole`` and
    ``gru4rec``. ``sep`` overrides the format's separator. ``limit`` keeps the first N events.
    Raises ``DataError`` on unreadable input, and when no event is found.
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; formats are {', '.join(FORMATS)}")
    if isinstance(columns, str):
        columns = parse_columns(columns)
    cols = _check_columns(columns or {})
    if cols and fmt not in ("recbole", "gru4rec", "csv"):
        raise DataError(f"format {fmt!r} has fixed columns; 'columns' applies to recbole, gru4rec, csv")
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, not {limit}")
    p = Path(path)
    if fmt == "gru4rec":
        files = _gru4rec_files(p)
    else:
        files = [_single_file(p, fmt, _PATTERNS[fmt])]
    events = itertools.chain.from_iterable(_read(f, fmt, cols, sep) for f in files)
    out = list(itertools.islice(events, limit))
    if not out and limit != 0:
        raise DataError("no events found", files[0] if len(files) == 1 else p)
    return out


#: What a directory given for a single-file format is searched for.
_PATTERNS = {"recbole": ("*.inter",), "sequences": ("*.txt",), "pairs": ("*.txt",), "taobao": ("*.csv",),
             "diginetica": ("*.csv",), "csv": ("*.csv", "*.tsv", "*.txt")}


def _single_file(path: Path, fmt: str, patterns: tuple[str, ...]) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError("no such file or directory", path)
    found = sorted({f for pat in patterns for f in path.glob(pat) if f.is_file()})
    if not found:
        raise DataError(f"no {'/'.join(patterns)} files for format {fmt!r}", path)
    if len(found) > 1:
        raise DataError(f"several files for format {fmt!r} ({', '.join(f.name for f in found)}); pass one", path)
    return found[0]


def _gru4rec_files(path: Path) -> list[Path]:
    """A file, or a session-rec directory: ``*_train_full.txt`` then its ``*_test.txt``.

    (``*_train_tr.txt`` / ``*_train_valid.txt`` are re-splits of train_full and are not read.)
    """
    if path.is_dir():
        full = sorted(path.glob("*_train_full.txt"))
        if len(full) > 1:
            raise DataError(f"several *_train_full.txt files ({', '.join(f.name for f in full)}); pass one", path)
        if full:
            test = full[0].with_name(full[0].name[: -len("_train_full.txt")] + "_test.txt")
            return [full[0], test] if test.is_file() else [full[0]]
    return [_single_file(path, "gru4rec", ("*.txt", "*.tsv"))]


def _read(path: Path, fmt: str, cols: dict[str, str], sep: str | None) -> Iterator[Interaction]:
    if fmt == "sequences":
        return _order_only(path, sep, pairs=False)
    if fmt == "pairs":
        return _order_only(path, sep, pairs=True)
    if fmt == "taobao":
        return _taobao(path, sep or ",")
    if fmt == "diginetica":
        return _diginetica(path, sep or ";")
    if fmt == "recbole":
        defaults = {"user_id": "user_id", "item_id": "item_id", "ts": "timestamp", "event_type": "event_type"}
        return _table(path, sep or "\t", {**defaults, **cols}, {"ts", "event_type"} - set(cols), recbole=True)
    if fmt == "gru4rec":
        defaults = {"user_id": "SessionId", "item_id": "ItemId", "ts": "Time"}
        return _table(path, sep or "\t", {**defaults, **cols}, set(), recbole=False)
    if "user_id" not in cols or "item_id" not in cols:
        raise DataError("format 'csv' needs columns user_id=COL,item_id=COL[,ts=COL:s|ms][,event_type=COL]", path)
    return _table(path, sep or ",", cols, set(), recbole=False, quoting=True)


def _to_ms(text: str, unit: str, path: Path, line: int) -> int:
    try:
        if unit == "ms":
            return int(text) if text.isdigit() else int(round(float(text)))
        return int(text) * 1000 if text.isdigit() else int(round(float(text) * 1000))
    except (ValueError, OverflowError):
        raise DataError(f"timestamp {text!r} is not a number", path, line) from None


def _lines(path: Path, sep: str | None, skip_header: bool) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if (n == 1 and skip_header) or not line.strip():
                continue
            yield n, line.rstrip("\r\n").split(sep)


def _order_only(path: Path, sep: str | None, pairs: bool) -> Iterator[Interaction]:
    seen: Counter[str] = Counter()  # events per user so far (a user may span several lines)
    for n, fields in _lines(path, sep, skip_header=False):
        if pairs and len(fields) != 2:
            raise DataError(f"expected 'user item', got {len(fields)} fields", path, n)
        if len(fields) < 2 or not all(fields):
            raise DataError("expected 'user item [item ...]' (a user without items, or an empty field)", path, n)
        user = fields[0]
        k = seen[user]
        for j, item in enumerate(fields[1:]):
            yield Interaction(user, item, CLICK, SYNTHETIC_BASE_MS + (k + j) * SYNTHETIC_STEP_MS)
        seen[user] = k + len(fields) - 1


def _taobao(path: Path, sep: str) -> Iterator[Interaction]:
    for n, f in _lines(path, sep, skip_header=False):
        if len(f) != 5 or not (f[0] and f[1]):
            raise DataError(f"expected user,item,category,behavior,timestamp; got {len(f)} fields", path, n)
        kind = TAOBAO_BEHAVIORS.get(f[3])
        if kind is None:
            raise DataError(f"behavior {f[3]!r} is not one of {', '.join(TAOBAO_BEHAVIORS)}", path, n)
        yield Interaction(f[0], f[1], kind, _to_ms(f[4], "s", path, n))


def _header_index(header: list[str], names: dict[str, str], optional: set[str], path: Path) -> dict[str, int]:
    """Column index of each key; a key in ``optional`` (a default name the user did not give) may be absent."""
    where = {name: i for i, name in enumerate(header)}
    idx = {}
    for key, name in names.items():
        if key == "ts_unit":
            continue
        if name in where:
            idx[key] = where[name]
        elif key not in optional:
            raise DataError(f"header has no column {name!r} (for {key}); columns are {header}", path, 1)
    return idx


def _table(
    path: Path, sep: str, names: dict[str, str], optional: set[str], recbole: bool, quoting: bool = False
) -> Iterator[Interaction]:
    """Header-based delimited files (recbole, gru4rec, csv). Without a ts column: order only."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter=sep, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
        header = next(rows, None)
        if header is None:
            raise DataError("empty file (expected a header line)", path)
        header = [h.strip().split(":", 1)[0] if recbole else h.strip() for h in header]
        idx = _header_index(header, names, optional, path)
        ui, ii, ti, ei = idx["user_id"], idx["item_id"], idx.get("ts"), idx.get("event_type")
        unit = names.get("ts_unit", "s")
        width = len(header)
        seen: Counter[str] = Counter()
        for row in rows:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            n = rows.line_num
            if len(row) != width:
                raise DataError(f"expected {width} fields {header}, got {len(row)}", path, n)
            user, item = row[ui], row[ii]
            if not user or not item:
                raise DataError("empty user or item id", path, n)
            if ti is None:
                ts = SYNTHETIC_BASE_MS + seen[user] * SYNTHETIC_STEP_MS
                seen[user] += 1
            else:
                ts = _to_ms(row[ti], unit, path, n)
            kind = CLICK if ei is None else row[ei]
            if not kind:
                raise DataError("empty event type", path, n)
            yield Interaction(user, item, kind, ts)


def _diginetica(path: Path, sep: str) -> Iterator[Interaction]:
    """Session = user; ts = eventdate (UTC midnight) in ms + timeframe (ms within the session)."""
    lines = _lines(path, sep, skip_header=False)
    first = next(lines, None)
    need = ("session_id", "item_id", "timeframe", "eventdate")
    if first is None or not set(need) <= set(first[1]):
        raise DataError(f"expected a header with {';'.join(need)}", path, first[0] if first else None)
    header = first[1]
    si, ii, fi, di = (header.index(k) for k in need)
    days: dict[str, int] = {}
    for n, f in lines:
        if len(f) != len(header) or not (f[si] and f[ii]):
            raise DataError(f"expected {len(header)} fields {header}, got {len(f)}", path, n)
        day = days.get(f[di])
        if day is None:
            try:
                day = days[f[di]] = (dt.date.fromisoformat(f[di]) - _EPOCH).days * _DAY_MS
            except ValueError:
                raise DataError(f"eventdate {f[di]!r} is not YYYY-MM-DD", path, n) from None
        if not f[fi].isdigit():
            raise DataError(f"timeframe {f[fi]!r} is not a non-negative integer (ms)", path, n)
        yield Interaction(f[si], f[ii], BROWSE, day + int(f[fi]))


def describe(events: list[Interaction]) -> dict[str, object]:
    """Rows, distinct users and items, event-type counts and time range (ms and ISO UTC)."""
    if not events:
        return {"rows": 0, "users": 0, "items": 0, "event_types": {}, "ts_min": None, "ts_max": None}
    lo = min(e.ts for e in events)
    hi = max(e.ts for e in events)
    iso = lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat()  # noqa: E731
    return {
        "rows": len(events),
        "users": len({e.user_id for e in events}),
        "items": len({e.item_id for e in events}),
        "event_types": dict(Counter(e.event_type for e in events).most_common()),
        "ts_min": lo,
        "ts_max": hi,
        "first": iso(lo),
        "last": iso(hi),
    }


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(f"usage: python -m model.data PATH FORMAT [COLUMNS]\nformats: {', '.join(FORMATS)}")
    try:
        evs = load(sys.argv[1], sys.argv[2], columns=sys.argv[3] if len(sys.argv) == 4 else None)
    except DataError as exc:
        sys.exit(f"error: {exc}")
    print(json.dumps(describe(evs), indent=2))
