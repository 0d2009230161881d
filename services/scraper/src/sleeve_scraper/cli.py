"""``sleeve scrape``."""

from __future__ import annotations

import argparse
from typing import Any

from sleeve_common.cli_args import bounded, genre_list
from sleeve_common.payloads import SOURCES, ScrapeRequest, check_scrape_request
from sleeve_common.progress import TerminalProgress, ThrottledProgress
from sleeve_common.runtime import open_runtime
from sleeve_common.settings import Settings
from sleeve_scraper.scrape import run_scrape

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add the scraper's subcommands to the ``sleeve`` parser."""
    scrape = commands.add_parser("scrape", help="collect covers and genre labels from a source")
    scrape.add_argument("--source", required=True, choices=SOURCES)
    scrape.add_argument(
        "--path",
        help="folder: DIR/<genre>/<file> or a path_or_url,genre CSV; bandcamp-tsv / mumu-csv: "
        "the dataset's label file",
    )
    scrape.add_argument(
        "--genres",
        type=genre_list,
        help="comma-separated genres to scrape (API sources: every genre of their taxonomy)",
    )
    scrape.add_argument(
        "--per-genre",
        type=bounded(int, 1),
        help="at most N albums per genre (API sources: 100 when not given)",
    )
    scrape.add_argument(
        "--resume",
        type=bounded(int, 1),
        metavar="RUN",
        help="continue scrape run RUN (interrupted or failed) after the last item it stored, "
        "with the same source and options",
    )
    scrape.set_defaults(command_fn=_scrape)


async def _scrape(args: argparse.Namespace, settings: Settings) -> int:
    request = ScrapeRequest(
        source=args.source,
        path=args.path,
        genres=args.genres,
        per_genre=args.per_genre,
        resume=args.resume,
    )
    # Before the database is opened: a missing credential or file is one clear line at once.
    check_scrape_request(request, settings)
    with TerminalProgress("scrape") as terminal:
        progress = ThrottledProgress(terminal, interval_s=0.5)
        async with open_runtime(settings) as runtime:
            run_id, counters = await run_scrape(runtime, request, on_progress=progress)
    print(f"scrape run {run_id}: {counters.summary()}")  # noqa: T201
    return 0
