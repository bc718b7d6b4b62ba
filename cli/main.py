"""The one user-facing command line: ``streamrec <command> [flags]``.

Each command lives in its own module under ``cli/`` exposing ``register(subparsers)``; heavy
imports (torch, faust) happen inside the command, so ``streamrec --help`` is instant and the
worker never pulls in torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# (module, command) in the order --help lists them.
COMMANDS = [
    ("streamrec.cli.train_cmd", "train"),
    ("streamrec.cli.evaluate_cmd", "evaluate"),
    ("streamrec.cli.export_cmd", "export"),
    ("streamrec.cli.kafka_cmd", "kafka"),
    ("streamrec.cli.worker_cmd", "worker"),
    ("streamrec.cli.replay_cmd", "replay"),
    ("streamrec.cli.live_cmd", "evaluate-live"),
    ("streamrec.cli.promote_cmd", "promote"),
    ("streamrec.cli.demo_cmd", "demo"),
]

EPILOG = """\
The usual path:
  streamrec train    --data DATA --format FMT --protocol loo-full --out runs/m1
  streamrec evaluate --model runs/m1 --data DATA --format FMT --protocol loo-full
  streamrec export   --model runs/m1 --out bundles/m1
  streamrec kafka start
  streamrec worker   --bundle bundles/m1 --brokers 127.0.0.1:PORT
  streamrec replay   --data DATA --format FMT --brokers 127.0.0.1:PORT
Or all of it at once, on demo data: streamrec demo
Every command has --help.
"""


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamrec",
        description="Streaming real-time recommendations: Kafka events -> per-user LSTM state -> ONNX step -> top-k.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, _ in COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # command not written yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"streamrec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"streamrec {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run through the imported module so that its CliError is the one commands raise.
    from streamrec.cli.main import main as _main

    sys.exit(_main())
