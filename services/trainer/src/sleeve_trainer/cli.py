"""``sleeve dataset build|list`` and ``sleeve train``."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from sleeve_common.cli_args import bounded, choice_list, genre_list, name
from sleeve_common.model_files import EXPORT_VARIANTS
from sleeve_common.payloads import TrainRequest
from sleeve_common.progress import TerminalProgress
from sleeve_common.runtime import open_runtime
from sleeve_common.settings import Settings
from sleeve_trainer.datasets import SplitSpec, build_dataset, dataset_members, list_datasets
from sleeve_trainer.tensorflow_setup import load_tensorflow
from sleeve_trainer.training import run_training

__all__ = ["register"]

logger = logging.getLogger(__name__)

_DEFAULTS = TrainRequest(dataset="defaults")
_SPLIT_DEFAULTS = SplitSpec()


def register(commands: Any) -> None:
    """Add the trainer's subcommands to the ``sleeve`` parser."""
    dataset = commands.add_parser("dataset", help="build and list datasets").add_subparsers(
        metavar="ACTION"
    )
    build = dataset.add_parser("build", help="deduplicated, stratified train/val/test split")
    build.add_argument("--name", required=True, type=name)
    build.add_argument("--genres", type=genre_list, help="comma-separated genres (default: all)")
    build.add_argument(
        "--min-per-genre", type=bounded(int, 1), default=_SPLIT_DEFAULTS.min_per_genre
    )
    build.add_argument("--max-per-genre", type=bounded(int, 1))
    build.add_argument(
        "--val-fraction", type=bounded(float, 0.01, 0.5), default=_SPLIT_DEFAULTS.val_fraction
    )
    build.add_argument(
        "--test-fraction", type=bounded(float, 0.01, 0.5), default=_SPLIT_DEFAULTS.test_fraction
    )
    build.add_argument("--seed", type=bounded(int, 0), default=_SPLIT_DEFAULTS.seed)
    build.set_defaults(command_fn=_dataset_build)
    dataset.add_parser("list", help="list datasets").set_defaults(command_fn=_dataset_list)

    train = commands.add_parser("train", help="train, evaluate, export and register a model")
    train.add_argument("--dataset", required=True, type=name)
    train.add_argument("--epochs", type=bounded(int, 1, 1000), default=_DEFAULTS.epochs)
    train.add_argument(
        "--fine-tune-epochs",
        type=bounded(int, 0, 1000),
        default=_DEFAULTS.fine_tune_epochs,
        help="phase 2: most epochs with the top blocks unfrozen (0: the head alone)",
    )
    train.add_argument(
        "--learning-rate", type=bounded(float, 1e-7, 0.5), default=_DEFAULTS.learning_rate
    )
    train.add_argument(
        "--fine-tune-learning-rate",
        type=bounded(float, 1e-8, 0.1),
        default=_DEFAULTS.fine_tune_learning_rate,
    )
    train.add_argument(
        "--unfreeze-blocks", type=bounded(int, 1, 4), default=_DEFAULTS.unfreeze_blocks
    )
    train.add_argument("--dropout", type=bounded(float, 0.0, 0.9), default=_DEFAULTS.dropout)
    train.add_argument("--batch-size", type=bounded(int, 1, 1024), default=_DEFAULTS.batch_size)
    train.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="train on the served view alone, not on crops and mirror images",
    )
    train.add_argument("--seed", type=bounded(int, 0), default=_DEFAULTS.seed)
    train.add_argument(
        "--variants",
        type=choice_list(EXPORT_VARIANTS),
        default=_DEFAULTS.variants,
        metavar="fp16,int8",
        help="also export these variants, each scored on the test split and timed on this CPU "
        "(adds 20 to 30 s on a 2-core CPU; default: none)",
    )
    train.set_defaults(command_fn=_train)


async def _dataset_build(args: argparse.Namespace, settings: Settings) -> int:
    spec = SplitSpec(
        genres=args.genres,
        min_per_genre=args.min_per_genre,
        max_per_genre=args.max_per_genre,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
    )
    async with open_runtime(settings) as runtime:
        dataset = await build_dataset(db=runtime.db, name=args.name, spec=spec)
    splits = dataset.counts["splits"]
    print(f"dataset {dataset.name!r}: genres {', '.join(dataset.genres)}")  # noqa: T201
    for split, per_genre in splits.items():
        print(f"  {split:<5} {sum(per_genre.values()):>6} covers  {per_genre}")  # noqa: T201
    print(  # noqa: T201
        f"  dropped: {dataset.counts['dropped_ambiguous']} covers with conflicting genres, "
        f"{dataset.counts['dropped_conflicting_near_duplicates']} conflicting near-duplicates"
    )
    return 0


async def _dataset_list(_args: argparse.Namespace, settings: Settings) -> int:
    async with open_runtime(settings) as runtime:
        datasets = await list_datasets(db=runtime.db)
    for d in datasets:
        sizes = {s: sum(g.values()) for s, g in d.counts["splits"].items()}
        print(f"{d.name:<24} {', '.join(d.genres):<40} {sizes}")  # noqa: T201
    if not datasets:
        print("no datasets yet: run `sleeve dataset build --name NAME`")  # noqa: T201
    return 0


async def _train(args: argparse.Namespace, settings: Settings) -> int:
    options = TrainRequest(
        dataset=args.dataset,
        epochs=args.epochs,
        fine_tune_epochs=args.fine_tune_epochs,
        learning_rate=args.learning_rate,
        fine_tune_learning_rate=args.fine_tune_learning_rate,
        unfreeze_blocks=args.unfreeze_blocks,
        dropout=args.dropout,
        batch_size=args.batch_size,
        augment=args.augment,
        seed=args.seed,
        variants=args.variants,
    )
    async with open_runtime(settings) as runtime:
        # A wrong dataset is said at once, not once TensorFlow has loaded.
        await dataset_members(db=runtime.db, name=options.dataset)
        # Before the live bar: while TensorFlow loads, what is written to stderr is held back
        # to filter out its start-up chatter (tensorflow_setup.py), and the bar's redraws
        # would be too. The run ticks once per epoch and phase, covers at most twice a second.
        logger.info("loading TensorFlow")
        await asyncio.to_thread(load_tensorflow)
        with TerminalProgress("train") as terminal:
            outcome = await run_training(runtime, options, on_progress=terminal)
    m = outcome.metrics
    print(  # noqa: T201
        f"model {outcome.version} (training run {outcome.run_id}): "
        f"test accuracy {m['accuracy']:.3f}, macro F1 {m['macro_f1']:.3f}, "
        f"ONNX max abs diff {m['export_max_abs_diff']:.2e}"
    )
    return 0
