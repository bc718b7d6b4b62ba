"""``streamrec export``: checkpoint -> artifact bundle (step.onnx, runs.onnx, vocabularies, manifest)."""
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

Large catalogs (--index): a two-stage bundle. The graph outputs the user's scoring vector, a
maximum-inner-product index over the item table (faiss-cpu, in its own file format, checksummed
in the manifest) returns --candidates items, which are re-scored exactly; the worker gets the
same top-(k+m) lists as from a full scan, as long as the index finds them. Export measures that:
on states stepped from the recorded sequences, recall@10 and recall@(k+m) of the indexed lists
against the exact scan go into the manifest, and a recall@10 below --min-recall writes nothing.
Kinds: ivf (--nlist, --nprobe; the choice for large catalogs: at 1M items 4,300 events/s at batch 1
against 53 for the full scan, recall@10 0.998; README "Large catalogs"), hnsw (--hnsw-m,
--ef-construction, --ef-search; slower here), flat (exhaustive, for checks).

examples:
  streamrec export --model runs/beauty --out bundles/beauty --k 20 --m 50
  streamrec export --model runs/shop --out bundles/shop --index ivf                (nlist 4 x sqrt(items), nprobe 32)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to an ONNX bundle (parity-checked)",
                       description="Export a trained checkpoint to the serving bundle: step.onnx (one event per "
                                   "user), runs.onnx (each user's run of events in one call: what the worker "
                                   "steps), the vocabularies and manifest.json. Parity is checked before anything "
                                   "is moved into place: step.onnx against PyTorch within the contract's "
                                   "tolerances, runs.onnx against step.onnx bit for bit.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory (streamrec train --out)")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="bundle directory to create (must not exist)")
    p.add_argument("--k", type=int, default=20, help="recommendations per list (default 20)")
    p.add_argument("--m", type=int, default=50,
                   help="seen-items window: the graph returns k+m items so serving can drop up to m "
                        "already-seen items and still return k (default 50)")
    p.add_argument("--model-id", help="model id in the manifest (default: lstm-<data set name>)")
    g = p.add_argument_group("item index (large catalogs; default: the graph scans the whole catalog)")
    g.add_argument("--index", choices=["none", "hnsw", "ivf", "flat"], default="none",
                   help="two-stage bundle with this item index (default none: exact full scan)")
    g.add_argument("--hnsw-m", type=int, help="hnsw: links per node (default 32)")
    g.add_argument("--ef-construction", type=int, help="hnsw: build-time search width (default 128)")
    g.add_argument("--ef-search", type=int, help="hnsw: query-time search width, at least --candidates (default 128)")
    g.add_argument("--nlist", type=int, help="ivf: lists (default 4 x sqrt(items))")
    g.add_argument("--nprobe", type=int, help="ivf: lists visited per query (default 32)")
    g.add_argument("--candidates", type=int, default=0,
                   help="items the index returns for exact re-scoring (default k+m)")
    g.add_argument("--min-recall", type=float, default=0.95,
                   help="refuse the bundle when the index's recall@10 against the exact scan is below this "
                        "(default 0.95)")
    p.set_defaults(func=run)


def index_spec(args: argparse.Namespace):
    """The --index flags as an IndexSpec (None for the full scan)."""
    from streamrec.export.ann import IndexSpec

    if args.index == "none":
        return None
    given = {"--hnsw-m": ("hnsw", "M", args.hnsw_m), "--ef-construction": ("hnsw", "ef_construction", args.ef_construction),
             "--ef-search": ("hnsw", "ef_search", args.ef_search), "--nlist": ("ivf", "nlist", args.nlist),
             "--nprobe": ("ivf", "nprobe", args.nprobe)}
    stray = [flag for flag, (kind, _, v) in given.items() if v is not None and kind != args.index]
    if stray:
        raise CliError(f"{', '.join(stray)} do not apply to --index {args.index}")
    flags = {name: v for kind, name, v in given.values() if kind == args.index}
    if any(v is not None and v < 1 for v in flags.values()) or args.candidates < 0:
        raise CliError("index parameters must be >= 1")
    if not 0.0 <= args.min_recall <= 1.0:
        raise CliError("--min-recall is a share between 0 and 1")
    return IndexSpec(args.index, {k: v for k, v in flags.items() if v is not None}, args.candidates)


def run(args: argparse.Namespace) -> int:
    from streamrec.export.ann import IndexUnavailable
    from streamrec.export.onnx_export import export_bundle
    from streamrec.export.parity import ParityError
    from streamrec.export.recall import RecallError
    from streamrec.model import checkpoint

    if args.k < 1 or args.m < 0:
        raise CliError("--k must be >= 1 and --m >= 0")
    spec = index_spec(args)
    try:
        ckpt = checkpoint.load(args.model)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        manifest, report = export_bundle(ckpt, args.out, k=args.k, m=args.m, model_id=args.model_id,
                                         index=spec, min_recall=args.min_recall)
    except (FileExistsError, IndexUnavailable) as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:  # e.g. a transition prior, which no inner-product index can serve
        raise CliError(str(exc)) from None
    except RecallError as exc:
        raise CliError(f"recall gate failed, no bundle written: {exc.report.text()}\n"
                       f"raise --ef-search (hnsw) or --nprobe (ivf), or lower --min-recall") from None
    except ParityError as exc:
        failed = Path(str(args.out).rstrip("/") + ".parity-failed.txt")
        failed.write_text(exc.report.text() + "\n", encoding="utf-8")
        raise CliError(f"parity check failed, no bundle written; report in {failed}\n{exc.report.text()}") from None
    print(report.text())
    if manifest.indexed:
        rec, ix = manifest.index["recall"], manifest.index
        print(f"\nindex {ix['kind']} ({ix['library']} {ix['library_version']}, {ix['params']}, "
              f"{ix['candidates']} candidates): recall@10 {rec['recall@10']:.4f}, "
              f"recall@{manifest.n_top} {rec[f'recall@{manifest.n_top}']:.4f} on {rec['states']} states "
              f"(gate >= {rec['threshold']:g})")
    print(f"\nbundle {args.out}: {manifest.model_version}, {manifest.n_items - 2} items, "
          f"k={manifest.k}, m={manifest.m}, {manifest.layers}x{manifest.hidden} LSTM")
    return 0
