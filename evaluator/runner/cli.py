"""Command line of the runner. One subcommand per job kind; ``train`` comes later."""

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
    predict.set_defaults(handler=_cmd_predict)
    return parser


def _cmd_predict(args: argparse.Namespace) -> None:
    from .predict import run_predict

    run_predict(
        model_format=args.model_format,
        model_path=args.model,
        features_path=args.features,
        output_path=args.output,
        batch_size=args.batch_size,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except RunnerError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return exc.exit_code
    return EXIT_OK
