"""``sleeve serve`` and ``sleeve score``."""

from __future__ import annotations

import argparse
from typing import Any

from sleeve_common.cli_args import bounded
from sleeve_common.exceptions import NotImplementedYet
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


async def _score(_args: argparse.Namespace, _settings: Settings) -> int:
    raise NotImplementedYet("bulk scoring (`sleeve score`)")
