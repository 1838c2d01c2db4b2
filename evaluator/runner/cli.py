"""Command line of the runner. One subcommand per job kind: ``predict`` and ``train``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import EXIT_OK, RunnerError
from .loaders import LOADERS


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runner", description="Vaultbench in-sandbox runner")
    sub = parser.add_subparsers(dest="command", required=True)

    predict = sub.add_parser("predict", help="write predictions for a features file")
    predict.add_argument("--format", required=True, choices=sorted(LOADERS), dest="model_format")
    predict.add_argument("--model", required=True, type=Path)
    predict.add_argument("--features", required=True, type=Path)
    predict.add_argument("--output", required=True, type=Path)
    predict.add_argument("--batch-size", type=_positive_int, default=4096)
    predict.add_argument("--weights-offset", type=Path, default=None, help="safetensors D: w = w0 + D")
    predict.add_argument("--compile-to", type=Path, default=None, help="also write the numpy-only form here")
    predict.set_defaults(handler=_cmd_predict)

    train = sub.add_parser("train", help="serve federated training rounds until stopped")
    train.add_argument("--format", required=True, choices=["torchscript", "python_package"], dest="model_format")
    train.add_argument("--model", required=True, type=Path)
    train.add_argument("--train-features", required=True, type=Path)
    train.add_argument("--train-labels", required=True, type=Path)
    train.add_argument("--val-features", required=True, type=Path)
    train.add_argument("--requests", required=True, type=Path)
    train.add_argument("--output", required=True, type=Path)
    train.set_defaults(handler=_cmd_train)

    pooled = sub.add_parser("pooled", help="import the format's runtime, then predict one job from /job")
    pooled.add_argument("--format", required=True, choices=sorted(LOADERS), dest="model_format")
    pooled.add_argument("--job", required=True, type=Path)
    pooled.add_argument("--output", required=True, type=Path)
    pooled.add_argument(
        "--plain-sklearn", action="store_true", help="warm the plain reader (plain_sklearn.py), not scikit-learn"
    )
    pooled.set_defaults(handler=_cmd_pooled)
    return parser


def _cmd_train(args: argparse.Namespace) -> None:
    from .train import serve_training

    serve_training(
        model_format=args.model_format,
        model_path=args.model,
        train_features_path=args.train_features,
        train_labels_path=args.train_labels,
        val_features_path=args.val_features,
        requests_dir=args.requests,
        output_dir=args.output,
    )


def _cmd_pooled(args: argparse.Namespace) -> None:
    from .pooled import serve_one

    serve_one(model_format=args.model_format, job_dir=args.job, output_path=args.output, plain_sklearn=args.plain_sklearn)


def _cmd_predict(args: argparse.Namespace) -> None:
    from .predict import run_predict

    run_predict(
        model_format=args.model_format,
        model_path=args.model,
        features_path=args.features,
        output_path=args.output,
        batch_size=args.batch_size,
        weights_offset=args.weights_offset,
        compile_to=args.compile_to,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except RunnerError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return exc.exit_code
    return EXIT_OK
