"""Flags shared by several commands (data selection, Kafka security), and loading data with clear errors."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from streamrec.cli.main import CliError

if TYPE_CHECKING:
    from streamrec.streams.config import KafkaSecurity

DATA_HELP = """\
data formats (--format):
  recbole     RecBole atomic .inter file (ml-100k)
  sequences   "user item item ..." per line, order only (Beauty.txt)
  pairs       "user item" per line, order only
  gru4rec     TSV SessionId ItemId Time; a directory loads *_train_full.txt + *_test.txt (yoochoose)
  taobao      UserBehavior.csv (pv -> browse; cart, fav, buy keep their names)
  diginetica  train-item-views.csv (session as user)
  csv         any CSV with --columns "user_id=COL,item_id=COL,ts=COL:s|ms[,event_type=COL]"
protocols (--protocol):
  loo-full    last item per user = test, second-last = validation (order-only data)
  temporal    global cutoff at the 90th percentile of timestamps; every later event of a
              known user is a target, predicted from everything before it (what streaming does)
"""


def add_data_flags(p: argparse.ArgumentParser, required: bool = True, protocol: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", required=required, metavar="PATH", help="data file or directory")
    g.add_argument("--format", dest="fmt", required=required, metavar="FMT",
                   help="recbole | sequences | pairs | gru4rec | taobao | diginetica | csv")
    g.add_argument("--columns", help="csv column mapping, e.g. user_id=uid,item_id=iid,ts=time:s")
    g.add_argument("--sep", help="field separator override")
    if protocol:
        g.add_argument("--protocol", default="loo-full", choices=["loo-full", "temporal"],
                       help="evaluation protocol (default: loo-full)")


SECURITY_HELP = """\
kafka security (the same flags and variables for streamrec worker, replay and evaluate-live; a flag wins):
  --security-protocol SASL_SSL --sasl-mechanism SCRAM-SHA-512 --sasl-username U, with the password in
  STREAMREC_SASL_PASSWORD (command lines are visible to every user of the machine); --ssl-cafile PEM
  when the brokers' certificates are not signed by a CA of the system. Every Kafka client of the
  command uses them. A refused login stops the command with "cannot reach Kafka ... check the
  credentials" once the connection attempts time out (kafka-python reports no more than that).
"""


def add_security_flags(p: argparse.ArgumentParser) -> None:
    """--security-protocol, --sasl-*, --ssl-*: one group, spelled and explained alike for every command."""
    from streamrec.streams.config import SECURITY_SETTINGS, KafkaSecurity

    g = p.add_argument_group("kafka security")
    for s in SECURITY_SETTINGS:
        default = getattr(KafkaSecurity, s.field)
        shown = "" if "default:" in s.help else f" (default: {'none' if default is None else default})"
        g.add_argument(s.flag, dest=s.field, metavar=s.metavar, default=None, help=f"{s.help} [{s.env}]{shown}")


def security_of(args: argparse.Namespace) -> KafkaSecurity:
    """The command's ``KafkaSecurity``: flags over ``STREAMREC_*`` variables, checked (CliError says what is wrong)."""
    from streamrec.streams.config import SECURITY_SETTINGS, ConfigError, KafkaSecurity

    try:
        return KafkaSecurity.from_env(os.environ, **{s.field: getattr(args, s.field) for s in SECURITY_SETTINGS})
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def load_events(args: argparse.Namespace):
    from streamrec.model.data import DataError, load

    path = Path(args.data).expanduser()
    if not path.exists():
        hint = ""
        if "shared" in str(path) or os.environ.get("STREAMREC_DATA"):
            hint = " (real data sets live at ../shared/data; see its README)"
        raise CliError(f"--data {path}: no such file or directory{hint}")
    try:
        return load(path, args.fmt, columns=args.columns, sep=args.sep)
    except (DataError, ValueError) as exc:
        raise CliError(str(exc)) from None
