"""``streamrec export``: checkpoint -> artifact bundle (step.onnx + vocabularies + manifest)."""
from __future__ import annotations

import argparse
from pathlib import Path

from streamrec.cli.main import CliError

EPILOG = """\
The bundle is the only thing serving loads. Export checks parity itself: on recorded
sequences (stored in the checkpoint), batch 1 and 8, 60 steps with the state carried, the
ONNX step must reproduce the PyTorch model (states within 1e-5, scores within 1e-4, the same
top ids except between tied scores); otherwise nothing usable is written and the mismatch
report says which output differs and by how much.

example:
  streamrec export --model runs/beauty --out bundles/beauty --k 20 --m 50
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to an ONNX bundle (parity-checked)",
                       description="Export a trained checkpoint to the serving bundle.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory (streamrec train --out)")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="bundle directory to create (must not exist)")
    p.add_argument("--k", type=int, default=20, help="recommendations per list (default 20)")
    p.add_argument("--m", type=int, default=50,
                   help="seen-items window: the graph returns k+m items so serving can drop up to m "
                        "already-seen items and still return k (default 50)")
    p.add_argument("--model-id", help="model id in the manifest (default: lstm-<data set name>)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from streamrec.export.onnx_export import export_bundle
    from streamrec.export.parity import ParityError
    from streamrec.model import checkpoint

    if args.k < 1 or args.m < 0:
        raise CliError("--k must be >= 1 and --m >= 0")
    try:
        ckpt = checkpoint.load(args.model)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        manifest, report = export_bundle(ckpt, args.out, k=args.k, m=args.m, model_id=args.model_id)
    except FileExistsError as exc:
        raise CliError(str(exc)) from None
    except ParityError as exc:
        failed = Path(str(args.out).rstrip("/") + ".parity-failed.txt")
        failed.write_text(exc.report.text() + "\n", encoding="utf-8")
        raise CliError(f"parity check failed, no bundle written; report in {failed}\n{exc.report.text()}") from None
    print(report.text())
    print(f"\nbundle {args.out}: {manifest.model_version}, {manifest.n_items - 2} items, "
          f"k={manifest.k}, m={manifest.m}, {manifest.layers}x{manifest.hidden} LSTM")
    return 0
