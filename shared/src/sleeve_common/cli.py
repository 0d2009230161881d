"""The ``sleeve`` command line: one entry point, subcommands contributed by each service.

Each installed service package registers its subcommands through the entry-point group
``sleeve.commands`` and its job handlers through ``sleeve.job_handlers``, so a container
that installs only the inference service has only the inference commands.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from sleeve_common.bootstrap import KIND as BOOTSTRAP
from sleeve_common.bootstrap import bootstrap_handler, queue_bootstrap
from sleeve_common.console import relay_lines
from sleeve_common.db import upgrade_database
from sleeve_common.exceptions import ConfigError, NotFound, SleeveError
from sleeve_common.jobs import JobQueue
from sleeve_common.logs import configure_logging
from sleeve_common.registry import NO_MODEL_HINT, list_model_versions, promote
from sleeve_common.runtime import Runtime, open_runtime
from sleeve_common.settings import Settings, load_settings
from sleeve_common.worker import Handler, run_worker, worker_name

__all__ = ["Command", "main"]

Command = Callable[[argparse.Namespace, Settings], Awaitable[int]]
HandlerFactory = Callable[[Runtime], Handler]

EXIT_ERROR = 1
EXIT_USAGE = 2

_CONSOLE_LINE_LIMIT = 1 << 20  # bytes of one relayed console line
_STOP_GRACE_S = 20.0  # for children to hand their jobs back and exit after Ctrl-C

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, load settings, run the command; errors become one clear line and an exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command_fn"):
        parser.print_help()
        return EXIT_USAGE
    try:
        settings = load_settings()
        configure_logging(settings.log_level)
        code: int = asyncio.run(args.command_fn(args, settings))
        return code
    except ConfigError as exc:
        _say(f"configuration error: {exc}")
        return EXIT_USAGE
    except NotFound as exc:
        _say(str(exc))
        return EXIT_ERROR
    except SleeveError as exc:
        _say(f"error: {exc}")
        return EXIT_ERROR
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "request"
        _say(f"invalid {where}: {error['msg']}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say("interrupted")
        return 130


def _say(message: str) -> None:
    sys.stderr.write(f"sleeve: {message}\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sleeve", description="Album genre from cover art.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    db = commands.add_parser("db", help="database maintenance").add_subparsers(metavar="ACTION")
    db.add_parser("upgrade", help="apply migrations").set_defaults(command_fn=_db_upgrade)

    commands.add_parser(
        "check", help="check that the database and store are reachable"
    ).set_defaults(command_fn=_check)

    models = commands.add_parser("models", help="model registry").add_subparsers(metavar="ACTION")
    models.add_parser("list", help="list model versions").set_defaults(command_fn=_models_list)
    promote_parser = models.add_parser("promote", help="make a version the production model")
    promote_parser.add_argument("version", help="e.g. v3")
    promote_parser.set_defaults(command_fn=_models_promote)

    worker = commands.add_parser("worker", help="run queued jobs of the given kinds")
    worker.add_argument("kinds", nargs="+", choices=_job_kinds() or None)
    worker.set_defaults(command_fn=_worker)

    run = commands.add_parser("run", help="start the whole stack (API + workers) on this machine")
    run.set_defaults(command_fn=_run_stack)

    for entry in sorted(entry_points(group="sleeve.commands"), key=lambda e: e.name):
        entry.load()(commands)
    return parser


def _job_kinds() -> list[str]:
    """The job kinds installed services handle, read from package metadata (nothing imported)."""
    return sorted(entry.name for entry in entry_points(group="sleeve.job_handlers"))


def _job_handler_factories(kinds: Sequence[str]) -> dict[str, HandlerFactory]:
    """The handlers of ``kinds`` only: a worker imports no other service's job code."""
    return {
        entry.name: entry.load()
        for entry in entry_points(group="sleeve.job_handlers")
        if entry.name in kinds
    }


async def _db_upgrade(_args: argparse.Namespace, settings: Settings) -> int:
    await asyncio.to_thread(upgrade_database, settings.database_url)
    print("database is at the latest schema")  # noqa: T201
    return 0


async def _check(_args: argparse.Namespace, settings: Settings) -> int:
    async with open_runtime(settings) as runtime:
        print(f"database: ok ({runtime.db.safe_url})")  # noqa: T201
        print(f"store:    ok ({runtime.store.describe()})")  # noqa: T201
    return 0


async def _models_list(_args: argparse.Namespace, settings: Settings) -> int:
    async with open_runtime(settings) as runtime:
        versions = await list_model_versions(db=runtime.db)
    if not versions:
        print(NO_MODEL_HINT)  # noqa: T201
        return 0
    print(f"{'version':<10}{'stage':<12}{'accuracy':>9}{'macro F1':>10}  created")  # noqa: T201
    for v in versions:
        acc, f1 = v.metrics.get("accuracy"), v.metrics.get("macro_f1")
        print(  # noqa: T201
            f"{v.version:<10}{v.stage:<12}{_num(acc):>9}{_num(f1):>10}  "
            f"{v.created_at:%Y-%m-%d %H:%M}"
        )
    return 0


def _num(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-"


async def _models_promote(args: argparse.Namespace, settings: Settings) -> int:
    async with open_runtime(settings) as runtime:
        version = await promote(db=runtime.db, store=runtime.store, version=args.version)
    print(f"{version.version} is now the production model")  # noqa: T201
    return 0


async def _worker(args: argparse.Namespace, settings: Settings) -> int:
    factories = _job_handler_factories(args.kinds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(settings) as runtime:
        handlers = {kind: factories[kind](runtime) for kind in args.kinds}
        queue = JobQueue(runtime.db, lease_seconds=settings.job_lease_seconds)
        owner = worker_name("+".join(args.kinds))
        logger.info("worker %s waiting for %s jobs", owner, ", ".join(args.kinds))
        await run_worker(
            queue, handlers, owner=owner, poll_seconds=settings.worker_poll_seconds, stop=stop
        )
    _ignore_further_signals(loop)
    return 0


def _ignore_further_signals(loop: asyncio.AbstractEventLoop) -> None:
    """Once stopping is under way, a second SIGINT or SIGTERM (Ctrl-C reaches every process
    of the group, then `sleeve run` forwards SIGTERM) changes nothing, and cannot hit the
    window in which a closing event loop has shut its signal pipe but not yet removed its
    handlers ("Exception ignored when trying to write to the signal wakeup fd")."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)


async def _run_stack(_args: argparse.Namespace, settings: Settings) -> int:
    """Migrate, then run the API and one worker per job kind as child processes; while the
    registry is empty, queue and coordinate the first model's training (``bootstrap``)."""
    await asyncio.to_thread(upgrade_database, settings.database_url)
    children = [["serve"]] + [["worker", kind] for kind in _job_kinds()]
    env = _child_env()
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sleeve_common",
            *argv,
            env=env,
            stderr=asyncio.subprocess.PIPE,
            limit=_CONSOLE_LINE_LIMIT,
        )
        for argv in children
    ]
    relays = [asyncio.create_task(relay_lines(p.stderr, sys.stderr)) for p in procs if p.stderr]
    _say(f"started {', '.join(' '.join(c) for c in children)}")
    _say(f"API and Swagger UI: http://{settings.host}:{settings.port}/docs  (Ctrl-C stops)")
    stop, hurry, ending = asyncio.Event(), asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            hurry.set()  # a second Ctrl-C: do not wait for the children
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    waits = [asyncio.create_task(p.wait()) for p in procs]
    stopper = asyncio.create_task(stop.wait())
    first = asyncio.create_task(_first_model(settings, ending))
    await asyncio.wait([*waits, stopper], return_when=asyncio.FIRST_COMPLETED)
    ending.set()  # the bootstrap, if running, hands its job back for the next start
    await first
    await _stop_children(procs, waits, hurry)
    stopper.cancel()
    await asyncio.wait(relays, timeout=5)
    _ignore_further_signals(loop)
    codes = [w.result() for w in waits]
    failed = [" ".join(c) for c, code in zip(children, codes, strict=True) if code not in (0, -15)]
    if failed and not stop.is_set():
        _say(f"stopped because {', '.join(failed)} exited")
        return EXIT_ERROR
    return 0


def _child_env() -> dict[str, str]:
    """The children's environment: this one, with TensorFlow's C++ INFO and WARNING lines off
    unless the user chose otherwise (its errors still show)."""
    env = os.environ.copy()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


async def _stop_children(
    procs: list[asyncio.subprocess.Process], waits: list[asyncio.Task[int]], hurry: asyncio.Event
) -> None:
    """SIGTERM, then SIGKILL whatever is still running after the grace time (or a second
    Ctrl-C). Workers hand their jobs back on SIGTERM; a killed one's job waits for its lease."""
    for proc in procs:
        if proc.returncode is None:
            proc.terminate()
    pending = [w for w in waits if not w.done()]
    if pending:
        hurried = asyncio.create_task(hurry.wait())
        either: list[asyncio.Future[Any]] = [asyncio.gather(*pending), hurried]
        await asyncio.wait(
            either,
            timeout=_STOP_GRACE_S,
            return_when=asyncio.FIRST_COMPLETED,
        )
        hurried.cancel()
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
    await asyncio.gather(*waits)


async def _first_model(settings: Settings, ending: asyncio.Event) -> None:
    """With no model registered: queue the bootstrap (or find the one under way) and run its
    coordinator here until it ends or ``ending`` is set. Failures are said, never fatal: the
    API keeps serving and says the same."""
    try:
        async with open_runtime(settings) as runtime:
            await _coordinate_first_model(runtime, ending)
    except SleeveError as exc:
        _say(f"the first model's training could not go on: {exc}")
    except Exception:
        logger.exception("the first model's training stopped; the API keeps running")


async def _coordinate_first_model(runtime: Runtime, ending: asyncio.Event) -> None:
    settings = runtime.settings
    page = f"http://{settings.host}:{settings.port}/"
    if not settings.bootstrap:
        if not await list_model_versions(db=runtime.db):
            _say(f"SLEEVE_BOOTSTRAP is off, so no first model is trained: {NO_MODEL_HINT}")
        return
    queued = await queue_bootstrap(db=runtime.db, settings=settings)
    if queued is None:
        return
    if queued.created:
        _say(
            f"no model yet: training a first model from {queued.plan.describe()}; "
            f"progress at {page} (SLEEVE_BOOTSTRAP=false turns this off)"
        )
    else:
        _say(
            f"no model yet: continuing the first model's training (job {queued.job_id}, "
            f"from {queued.plan.describe()}); progress at {page}"
        )
    queue = JobQueue(runtime.db, lease_seconds=settings.job_lease_seconds)
    await run_worker(
        queue,
        {BOOTSTRAP: bootstrap_handler(runtime, announce=_say)},
        owner=worker_name(BOOTSTRAP),
        poll_seconds=settings.worker_poll_seconds,
        stop=ending,
        max_jobs=1,
    )
