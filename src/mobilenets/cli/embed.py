"""``mobilenets embed``: train compact embedding models (``embed train``: triplet loss or
distillation from a larger model), evaluate them by verification at a fixed false-accept rate and
retrieval (``embed eval``), and compute the embeddings of image files (``embed images``).

``embed train``'s options are the fields of :class:`mobilenets.train.embedding.EmbedConfig`, as
``mobilenets train``'s are those of ``TrainConfig``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..checkpoint import check_writable_file
from ..embed import embed_files, load_embedder, save_embeddings
from ..predict import image_files
from ..train.embedding import EmbedConfig, evaluate_embedding_weights, resume_embedding_config, train_embedding
from ..train.verification import plot_roc
from ..weights import PRETRAINED
from . import describe_error
from .eval import plot_path
from .train import add_training_options, run_training


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``embed`` group's description and its commands to its parser."""
    parser.description = (
        "Compact image embeddings (MobileNets §4.6): train an embedding model on some classes, verify it on "
        "classes held out of training (TAR at FAR 1e-4 and 1e-3, recall@k), embed image files."
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    text = "train an embedding model (triplet loss, or distillation from a trained teacher)"
    train = sub.add_parser("train", help=text, description=text)
    train.description = (
        "Train a backbone + linear projection + L2 normalisation on the classes of --data but the last --held-out, "
        "with FaceNet's semi-hard triplet loss, or by matching a trained --teacher's normalised features. Every "
        "epoch is evaluated on the held-out classes of the val split; writes checkpoints (resume with --resume), "
        "metrics.jsonl/csv, curves.png, roc.png and report.json."
    )
    add_training_options(train, EmbedConfig, run_train)

    text = "verification (TAR at FAR) and retrieval (recall@k) of embedding weights on held-out classes"
    evaluate = sub.add_parser("eval", help=text, description=text)
    evaluate.description = (
        "Compare all pairs of val images of the held-out classes by cosine similarity: TAR at FAR 1e-4 and 1e-3, "
        "recall@1 and @5, and the ROC as a PNG. Weights from `embed train` record their model, data and held-out "
        "classes; a classifier's weights (or 'pretrained') need --model, and are judged by their pooled features."
    )
    evaluate.add_argument("--weights", required=True, metavar="FILE", help="weights from `embed train` or `train`")
    evaluate.add_argument("--model", metavar="NAME", help="the model of weights that do not record it")
    evaluate.add_argument("--data", metavar="SOURCE", help="data set (default: the one the weights were trained on)")
    evaluate.add_argument(
        "--held-out", type=int, metavar="N", help="evaluate on the last N classes (default: those held out in training)"
    )
    evaluate.add_argument("--limit", type=int, metavar="N", help="at most N images (seeded choice)")
    evaluate.add_argument("--device", metavar="DEVICE", help="torch device (default: CUDA when available)")
    evaluate.add_argument(
        "--plot", metavar="PNG", help="where to write the ROC (default: eval-roc.png beside the weights)"
    )
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of text")
    evaluate.set_defaults(handler=run_eval)

    text = "compute the embeddings of image files"
    images = sub.add_parser("images", help=text, description=text)
    images.description = (
        "Embed image files (or folders of them, recursively) with weights from `embed train`, or with a "
        "classifier's pooled features (--model NAME --weights FILE|pretrained); writes a safetensors file: tensor "
        "'embeddings' (N, D), L2-normalised, and the images' paths in its metadata. An image that cannot be read "
        "gets a one-line error on stderr and is left out, the summary counts them, and the exit status is then 1."
    )
    images.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders of them")
    images.add_argument("--weights", required=True, metavar="FILE", help="weights from `embed train` or `train`")
    images.add_argument("--model", metavar="NAME", help="the model of weights that do not record it")
    images.add_argument("--out", required=True, metavar="FILE", help="the .safetensors file to write")
    images.add_argument("--device", metavar="DEVICE", help="torch device (default: CUDA when available)")
    images.set_defaults(handler=run_images)


def _check_model(args: argparse.Namespace) -> None:
    if args.weights == PRETRAINED and args.model is None:
        raise ValueError("--weights pretrained needs --model NAME (e.g. mobilenet_v2_1.0_224): whose ImageNet weights")


def run_train(args: argparse.Namespace) -> int:
    return run_training(
        args, EmbedConfig, resume=resume_embedding_config, train=train_embedding, command="mobilenets embed train"
    )


def run_eval(args: argparse.Namespace) -> int:
    plot = plot_path(args.plot, args.weights, "eval-roc.png", "--plot")
    _check_model(args)
    result, info = evaluate_embedding_weights(
        args.weights, args.data, model=args.model, held_out=args.held_out, limit=args.limit, device=args.device
    )
    if args.json:
        print(json.dumps({**{k: info[k] for k in ("model", "data", "held_out_classes")}, **result.to_dict()}, indent=2))
    else:
        print(f"{info['model']} on the held-out classes {', '.join(info['held_out_classes'])} of {info['data']}:")
        print(result.format())
    sys.stdout.flush()
    try:
        plot_roc({info["model"]: result}, plot)
    except OSError as err:
        print(
            f"mobilenets embed: error: ROC not written to {str(plot)!r}: {describe_error(err)} (choose another --plot)",
            file=sys.stderr,
        )
        return 1
    if not args.json:
        print(f"ROC: {plot}")
    return 0


def run_images(args: argparse.Namespace) -> int:
    if Path(args.out).suffix != ".safetensors":
        raise ValueError(f"--out must end with .safetensors, got {args.out!r}")
    out = check_writable_file(args.out, "--out", make_folder=True)
    _check_model(args)
    paths = image_files(args.images)
    model = load_embedder(args.weights, args.model)
    unreadable: set[Path] = set()

    def skip(path: Path, err: Exception) -> None:
        print(f"mobilenets embed: error: {err}", file=sys.stderr)
        unreadable.add(path)

    embeddings = embed_files(model, paths, device=args.device, on_unreadable=skip)
    readable = [path for path in paths if path not in unreadable]
    save_embeddings(out, readable, embeddings, model=model.meta.name, weights=str(args.weights))
    skipped = f"; {len(paths) - len(readable)} unreadable images skipped (named above)" if unreadable else ""
    print(f"{len(readable)} embeddings of {embeddings.shape[1]} dimensions ({model.meta.name}): {out}{skipped}")
    return 1 if unreadable else 0
