"""``hwsim train MODEL``: train a zoo model on CIFAR-10 (resumable; see hwsim/train.py)."""

from __future__ import annotations


def register(subparsers):
    p = subparsers.add_parser(
        "train",
        help="train a zoo model on CIFAR-10 in float32 (resumes from its checkpoint)",
        description="Train MODEL on the CIFAR-10 training images, checkpointing every epoch; re-running "
        "with the same arguments resumes after the last finished epoch. At the end the model is "
        "evaluated on the test images, saved (default hwsim/models/MODEL.keras) and recorded in "
        "results/float32_accuracy.json.",
    )
    from hwsim.zoo import NAMES

    p.add_argument("model", metavar="MODEL", help=f"one of: {', '.join(NAMES)}")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: per model, cifar_cnn 30, mobilenet 10)")
    p.add_argument("--batch-size", type=int, default=128, help="mini-batch size (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--checkpoint-dir", default=None, help="checkpoint folder (default ~/.cache/hwsim/train/MODEL, or $HWSIM_CACHE/train/MODEL)")
    p.add_argument("--out", default=None, help="where to write the trained .keras file (default hwsim/models/MODEL.keras)")
    p.add_argument("--limit", type=int, default=None, help="use only N training and N test images (quick runs; no results entry unless --results)")
    p.add_argument("--results", default=None, help="results JSON to update (default results/float32_accuracy.json when --limit is not given)")
    p.add_argument("--threads", type=int, default=None, help="TensorFlow intra-/inter-op threads (default: TensorFlow's choice)")
    p.add_argument("--data", default=None, help="CIFAR-10 source (default: HWSIM_DATA or the usual places, see hwsim.data)")
    p.add_argument("--allow-epochs-change", action="store_true",
                   help="resume a checkpoint made with another --epochs, recomputing the LR schedule for the new length (recorded in the results)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: per model, see hwsim.train.HYPER)")
    p.add_argument("--init-from", default=None, help="start from the weights of this .keras file (a warm restart) instead of a seeded initialisation")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from hwsim.train import train
    from hwsim.zoo import NAMES

    if args.model not in NAMES:
        raise ValueError(f"unknown model {args.model!r}; valid models: {', '.join(NAMES)}")
    rec = train(args.model, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                checkpoint_dir=args.checkpoint_dir, out=args.out, limit=args.limit, threads=args.threads,
                results=args.results, data_path=args.data, verbose=0 if args.quiet else 1,
                allow_epochs_change=args.allow_epochs_change, lr=args.lr, init_from=args.init_from)
    print(f"{rec['model']}: test accuracy {rec['accuracy']:.4f} ({rec['correct']}/{rec['n_test']})")
    return 0
