"""``streamrec train``: fit the LSTM on an event log, evaluate it beside the baselines."""
from __future__ import annotations

import argparse
import json
import os

from streamrec.cli.common import DATA_HELP, add_data_flags, load_events

EXAMPLES = """\
examples:
  streamrec train --data ../shared/data/beauty/Beauty.txt --format sequences --out runs/beauty
  streamrec train --data ../shared/data/ml-100k/ml-100k.inter --format recbole --protocol temporal --out runs/ml
writes DIR/model.pt (the checkpoint), DIR/metrics.json (test metrics of the LSTM and the
baselines, per-epoch history) and DIR/training_curve.png; turn it into a serving bundle with
  streamrec export --model DIR --out BUNDLE
"""


def register(sub: argparse._SubParsersAction) -> None:
    from streamrec.model.config import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train the LSTM next-item model on an event log",
                       description="Train the LSTM next-item model (full-softmax cross-entropy, AdamW, "
                                   "early stopping on validation NDCG@10) and evaluate it on the test "
                                   "targets beside MostPopular, RecentPopular and Markov baselines.",
                       epilog=DATA_HELP + "\n" + EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_flags(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory for the checkpoint and reports")
    p.add_argument("--init-from", metavar="DIR",
                   help="incremental retraining: continue from this earlier checkpoint (streamrec train --out DIR) "
                        "on the data given now. Its item and event-type vocabularies are extended with the new "
                        "ids (existing ids keep their ids and rows; new items get fresh rows), its model shape is "
                        "kept (the model flags below are ignored), and training starts from its weights")
    m = p.add_argument_group("model")
    m.add_argument("--dim", type=int, default=128, help="embedding size (default 128; 64 in models trained before 2026-12-07)")
    m.add_argument("--hidden", type=int, default=128, help="LSTM hidden size (default 128)")
    m.add_argument("--layers", type=int, default=1, choices=[1, 2], help="LSTM layers (default 1)")
    m.add_argument("--dropout", type=float, default=0.5, help="dropout (default 0.5)")
    m.add_argument("--no-first-order", action="store_true", help="ablation: drop the FPMC-style current-item term")
    m.add_argument("--first-order-dim", type=int, default=0, metavar="N",
                   help="first-order term through separate in/out item tables of size N (FPMC-style); "
                        "0 maps the current item's own embedding instead (default 0)")
    m.add_argument("--transitions", type=int, default=0, metavar="N",
                   help="add a transition-count prior: each item's N most frequent successors in the "
                        "training data, weighted by learned scalars (0 = off; default 0)")
    m.add_argument("--no-item-bias", action="store_true", help="ablation: drop the per-item output bias")
    m.add_argument("--cosine", type=float, default=20.0, metavar="SCALE",
                   help="score by cosine similarity of query and item vectors times SCALE instead of the "
                        "dot product (0 = off, as in models trained before 2026-12-07; default 20)")
    m.add_argument("--attention", type=_attention, default=20, metavar="N",
                   help="attend over the user's last N distinct items and add the context to the scoring "
                        "vector (0 = off, as in models trained before 2026-12-07; default 20). Serving takes them from the newest end of the bundle's "
                        "seen window, so export it with --m N or more (default m 50; export refuses less)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=d.epochs, help=f"maximum epochs (default {d.epochs})")
    t.add_argument("--patience", type=int, default=d.patience,
                   help=f"stop after this many epochs without progress on validation (default {d.patience})")
    t.add_argument("--min-delta", type=float, default=d.min_delta, metavar="SHARE",
                   help=f"progress = validation NDCG@10 up by more than this share since the last epoch that "
                        f"made progress; smaller gains still keep the best weights (0 = any gain; "
                        f"default {d.min_delta})")
    t.add_argument("--batch-size", type=int, default=d.batch_size, help=f"users per batch (default {d.batch_size})")
    t.add_argument("--max-len", type=int, default=d.max_len, help=f"truncated-BPTT length (default {d.max_len})")
    t.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate (default {d.lr})")
    t.add_argument("--lr-decay", type=float, default=d.lr_decay,
                   help=f"after --decay-patience epochs without validation gain, lr *= this (and, with "
                        f"--decay-resume, back to the best weights) (1 = off; default {d.lr_decay})")
    t.add_argument("--decay-patience", type=int, default=d.decay_patience, metavar="EPOCHS",
                   help=f"plateau schedule: decay the rate after this many epochs in a row without a validation "
                        f"gain (counted again after each decay). 1 decays on the first one, which can trap a run "
                        f"in an early plateau: validation is noisy in the first epochs (default {d.decay_patience})")
    t.add_argument("--decay-resume", action=argparse.BooleanOptionalAction, default=d.decay_resume,
                   help="on a decay, go back to the best weights; --no-decay-resume goes on from the current "
                        f"ones (default {'on' if d.decay_resume else 'off'})")
    t.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"AdamW weight decay (default {d.weight_decay})")
    t.add_argument("--schedule", choices=["plateau", "cosine"], default=d.schedule,
                   help=f"learning-rate schedule: plateau (--lr-decay after --decay-patience epochs without gain) or cosine "
                        f"(from --lr to 0 over --epochs) (default {d.schedule})")
    t.add_argument("--mask-seen", action=argparse.BooleanOptionalAction, default=d.mask_seen,
                   help="rank the target only among items not yet in the user's history in the training loss, "
                        f"as evaluation and serving do (default {'on' if d.mask_seen else 'off'})")
    t.add_argument("--item-mask", type=float, default=d.item_mask, metavar="P",
                   help=f"item dropout: share of input items replaced by the unknown-item id in training "
                        f"(default {d.item_mask})")
    t.add_argument("--ema", type=float, default=d.ema, metavar="DECAY",
                   help=f"validate and keep a moving average of the weights (0 = off); with --ema-epochs 0, "
                        f"its decay per optimizer step (default {d.ema})")
    t.add_argument("--ema-epochs", type=float, default=d.ema_epochs, metavar="EPOCHS",
                   help="let the moving average span about this many epochs (its decay settles at "
                        "1 - 1 / (EPOCHS x optimizer steps in an epoch), the same span of training on a data set of "
                        f"any size) instead of the fixed --ema decay; 0 = the fixed decay (default {d.ema_epochs:g})")
    t.add_argument("--refit", action=argparse.BooleanOptionalAction, default=d.refit,
                   help="temporal protocol: after validation has chosen the epochs, train again on every "
                        f"event before the cutoff T (default {'on' if d.refit else 'off'})")
    t.add_argument("--finetune", type=int, default=d.finetune, metavar="EPOCHS",
                   help="loo-full protocol: after early stopping, continue from the best weights for this "
                        "many epochs on every event of the test inputs, the validation targets included "
                        f"(0 = off; default {d.finetune})")
    t.add_argument("--finetune-lr", type=float, default=d.finetune_lr, metavar="SHARE",
                   help=f"learning rate of the --finetune epochs, as a share of --lr (default {d.finetune_lr})")
    t.add_argument("--negatives", type=int, default=d.negatives, metavar="N",
                   help="sampled softmax: rank each target against N items drawn uniformly instead of the whole "
                        "catalog (default 0: the whole catalog). For large catalogs: on Beauty (12k items) 1,024 "
                        "made an epoch 4.3x faster and validation NDCG@10 5%% lower; not with --transitions")
    t.add_argument("--score-block", type=int, default=d.score_block, metavar="ROWS",
                   help="compute each chunk's whole-catalog scores and loss in blocks of ROWS rows (0: one block; "
                        f"with --ema-epochs 0 too, the figures of earlier runs to the last digit; default {d.score_block}). On Beauty (12k items, "
                        "2 threads) 512 made an epoch about 20%% faster; the loss differs by float rounding, and the "
                        "figures on Beauty, ml-100k and yoochoose moved by at most 0.0002 NDCG@10")
    t.add_argument("--seed", type=int, default=d.seed, help="random seed (default 0)")
    t.add_argument("--threads", type=int, default=int(os.environ.get("STREAMREC_THREADS", 0)),
                   help="torch threads (env STREAMREC_THREADS; default: all cores)")
    t.add_argument("--time-budget", type=float, default=0.0, metavar="SECONDS",
                   help="stop training after this long, keeping the best epoch (default: no limit)")
    p.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    p.add_argument("--json", action="store_true", help="print the metrics document as JSON on stdout")
    p.set_defaults(func=run)


def _attention(text: str) -> int:
    """--attention N: a whole number >= 0, refused (exit 2, saying why) otherwise."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of items, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} items: the window holds 0 or more (0 turns attention off)")
    return n


def run(args: argparse.Namespace) -> int:
    from streamrec.model.config import TrainConfig
    from streamrec.model.pipeline import train

    events = load_events(args)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, max_len=args.max_len, lr=args.lr, lr_decay=args.lr_decay,
                      decay_patience=args.decay_patience, decay_resume=args.decay_resume,
                      weight_decay=args.weight_decay, patience=args.patience, min_delta=args.min_delta, seed=args.seed,
                      threads=args.threads, time_budget_s=args.time_budget, schedule=args.schedule,
                      mask_seen=args.mask_seen, item_mask=args.item_mask, ema=args.ema, refit=args.refit,
                      finetune=args.finetune, finetune_lr=args.finetune_lr, negatives=args.negatives,
                      score_block=args.score_block, ema_epochs=args.ema_epochs)
    model_kw = dict(dim=args.dim, hidden=args.hidden, layers=args.layers, dropout=args.dropout,
                    first_order=not args.no_first_order, first_order_dim=args.first_order_dim,
                    item_bias=not args.no_item_bias, transitions=args.transitions, cosine=args.cosine,
                    attention=args.attention)
    info = {"name": os.path.basename(os.path.normpath(args.data)).split(".")[0], "path": str(args.data),
            "format": args.fmt}
    init = None
    if args.init_from:
        from streamrec.model import checkpoint

        try:
            init = checkpoint.load(args.init_from)
        except ValueError as exc:
            raise SystemExit(f"streamrec train: error: --init-from: {exc}") from None
    try:
        doc = train(events, args.protocol, args.out, model_kw, cfg, info, with_baselines=not args.no_baselines,
                    init_from=init)
    except ValueError as exc:
        if init is None:
            raise
        raise SystemExit(f"streamrec train: error: --init-from {args.init_from}: {exc}") from None
    if args.json:
        print(json.dumps({"model": doc["model"], "baselines": doc.get("baselines", {}),
                          "n_targets": doc["model"].get("n_targets", 0)}, default=float))
    else:
        from streamrec.cli.tables import metrics_table

        print(metrics_table({"LSTM": doc["model"], **doc.get("baselines", {})}))
        print(f"\ncheckpoint, metrics.json and training_curve.png in {args.out} "
              f"({doc['train_seconds']:.0f} s of training, best epoch {doc['best_valid']['epoch']})")
        if "init_from" in doc:
            grown = doc["init_from"]
            print(f"continued from {args.init_from}: {grown['items_before']:,} items kept their ids, "
                  f"{grown['items_added']:,} new items added")
    return 0
