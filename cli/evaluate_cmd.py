"""``streamrec evaluate``: metrics of a checkpoint or of a bundle beside the baselines."""
from __future__ import annotations

import argparse
import json

from streamrec.cli.common import DATA_HELP, add_data_flags, load_events
from streamrec.cli.main import CliError

EXAMPLES = """\
examples:
  streamrec evaluate --model runs/beauty --data ../shared/data/beauty/Beauty.txt --format sequences
  streamrec evaluate --bundle bundles/ml --data ../shared/data/ml-100k/ml-100k.inter --format recbole \\
                     --protocol temporal --json
--model ranks the whole catalog with the PyTorch checkpoint; --bundle steps the exported ONNX
model event by event, as the streaming worker does.

masking (--mask):
  history   BENCHMARKS.md: every item of the user's input history is excluded, except the
            target itself (default for --model)
  serving   what the worker publishes: the last m distinct seen items are dropped, the target
            included (a repeat can not be recommended); default for --bundle, whose m comes
            from its manifest. These are the numbers `streamrec evaluate-live` reproduces.
With the same --mask, --model and --bundle give the same HR/NDCG/MRR (a test proves it).
A bundle with an item index (streamrec export --index) is reported twice: through its index, as
the worker steps it, and through the exact scan of its item table ("model_exact" in --json).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint or a bundle on a data set",
                       description="Full-catalog HR, NDCG, MRR, Precision and F1 at 10 and 20 (and AUC for "
                                   "checkpoints) on the test targets of a protocol, beside the baselines.",
                       epilog=DATA_HELP + "\n" + EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="DIR", help="checkpoint directory written by streamrec train")
    src.add_argument("--bundle", metavar="DIR", help="bundle directory written by streamrec export")
    add_data_flags(p)
    p.add_argument("--mask", choices=["history", "serving"],
                   help="masking rule (default: history for --model, serving for --bundle)")
    p.add_argument("--m", type=int, default=50,
                   help="seen-items window for --model --mask serving (default 50; a bundle uses its own)")
    p.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    p.add_argument("--json", action="store_true",
                   help='print one JSON object {"model": {...}, "baselines": {...}, "n_targets": N}')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    events = load_events(args)
    progress = not args.json
    if args.model:
        from streamrec.model import checkpoint
        from streamrec.model.pipeline import evaluate_checkpoint

        try:
            ckpt = checkpoint.load(args.model)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        window = args.m if args.mask == "serving" else None
        doc = evaluate_checkpoint(ckpt, events, args.protocol, not args.no_baselines, progress, window)
    else:
        doc = _evaluate_bundle(args, events, progress)
    if args.json:
        print(json.dumps(doc, default=float))
    else:
        from streamrec.cli.tables import metrics_table

        rows = {"LSTM" if args.model else "LSTM (bundle)": doc["model"]}
        if "model_exact" in doc:
            rows = {"LSTM (bundle, index)": doc["model"], "LSTM (bundle, exact scan)": doc["model_exact"]}
        print(metrics_table({**rows, **doc.get("baselines", {})}))
    return 0


def _evaluate_bundle(args, events, progress: bool) -> dict:
    from streamrec.export.bundle_eval import evaluate_bundle_on
    from streamrec.export.manifest import BundleError
    from streamrec.export.runtime import Bundle

    try:
        bundle = Bundle.load(args.bundle)
    except BundleError as exc:
        raise CliError(str(exc)) from None
    return evaluate_bundle_on(bundle, events, args.protocol, args.mask or "serving", not args.no_baselines, progress)
