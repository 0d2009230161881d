"""``sleeve serve`` and ``sleeve score``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sleeve_common.cli_args import bounded
from sleeve_common.settings import Settings

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add the inference service's subcommands to the ``sleeve`` parser."""
    serve = commands.add_parser("serve", help="run the inference API (SLEEVE_HOST:SLEEVE_PORT)")
    serve.add_argument("--host", help="address to bind (default: SLEEVE_HOST)")
    serve.add_argument("--port", type=bounded(int, 1, 65535), help="port (default: SLEEVE_PORT)")
    serve.set_defaults(command_fn=_serve)
    score = commands.add_parser("score", help="bulk-score a catalog of covers")
    score.add_argument("--input", required=True)
    score.add_argument("--output", required=True)
    score.add_argument("--model")
    score.add_argument("--engine", choices=("local", "ray"), default="local")
    score.set_defaults(command_fn=_score)


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here so that every other `sleeve` command starts without onnxruntime.
    import uvicorn

    from sleeve_inference.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
    await uvicorn.Server(config).serve()
    return 0


async def _score(args: argparse.Namespace, settings: Settings) -> int:
    """Validate, score the catalog with a progress line and ETA, export, print a summary."""
    # Imported here so that every other `sleeve` command starts without onnxruntime.
    from sleeve_common.progress import TerminalProgress, ThrottledProgress
    from sleeve_common.runtime import open_runtime
    from sleeve_inference.scoring.exports import write_export
    from sleeve_inference.scoring.jobs import create_scoring_job, run_scoring

    output = Path(args.output).expanduser().absolute()
    async with open_runtime(settings) as runtime:
        job = await create_scoring_job(
            runtime=runtime, input=args.input, output=output, model=args.model, engine=args.engine
        )
        with TerminalProgress("score") as terminal:
            progress = ThrottledProgress(terminal, interval_s=1.0)
            summary = await run_scoring(runtime, job.id, progress)
        await write_export(db=runtime.db, scoring_job_id=job.id, path=output, top_k=settings.top_k)
    print(f"{summary.line()}; results in {output}")  # noqa: T201
    return 0
