"""The ``asset-sync`` command line (SPEC section 2).

Each subcommand lives in the module that does its work; this module only parses arguments and
turns the errors a person can cause into one clear line and an exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumer import __version__
from consumer.errors import AssetSyncError, ConfigError, UsageError

if TYPE_CHECKING:
    from consumer.config import Config

EXIT_USAGE = 2


def _validate(args: argparse.Namespace) -> int:
    from consumer.commands.validate_files import validate_files

    return validate_files(args.files, sys.stdout)


def _dispatch(args: argparse.Namespace) -> int:
    from consumer.commands.dispatch_files import dispatch_files
    from consumer.config import load_config

    return dispatch_files(load_config(args.config), args.files, sys.stdout)


def event_loop_factory() -> Callable[[], Any]:
    """uvloop where it is installed (it roughly halves the event loop's cost per delivery)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; this is for odd platforms
        import asyncio

        return asyncio.new_event_loop
    return uvloop.new_event_loop


def tune_gc() -> None:
    """The cyclic collector, for a service that holds thousands of buffered records at once,
    mostly without reference cycles, and makes and drops a few dozen objects per event: what
    start-up made (modules, schemas, the configuration) moves out of its sight for good
    (``gc.freeze``), and a young collection runs every 50,000 allocations instead of 700
    (with the default thresholds the collector kept re-walking the buffer: a third of the
    CPU per event once; bench/RESULTS.md, issue 16). Refcounting still frees everything
    acyclic at once; garbage cycles wait a little longer."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _serve(args: argparse.Namespace, server: Callable[[Config], Any]) -> int:
    """Load the config, set up logging, run ``server(config).run()`` until it stops."""
    import asyncio

    from consumer.config import load_config
    from consumer.telemetry.logs import setup_logging

    config = load_config(args.config)
    setup_logging(config.log_level)
    tune_gc()
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(server(config).run())
    return 0


def _run(args: argparse.Namespace) -> int:
    from consumer.commands.service import Service

    return _serve(args, Service)


def _demo(args: argparse.Namespace) -> int:
    from consumer.local.demo import run_demo

    return run_demo(
        args.workdir,
        bootstrap=args.bootstrap,
        per_vendor=args.events,
        keep_running=args.keep_running,
        quiet=args.quiet,
        out=sys.stdout,
    )


def _replay(args: argparse.Namespace) -> int:
    from consumer.commands.replay import make_filter, replay
    from consumer.config import load_config

    flt = make_filter(
        reason=args.reason,
        vendor=args.vendor,
        since=args.since,
        asset=args.asset,
        event_id=args.event_id,
        limit=args.limit,
    )
    return replay(load_config(args.config), flt, args.dry_run, sys.stdout)


def _publish(args: argparse.Namespace) -> int:
    from consumer.commands.publish import publish_files
    from consumer.config import load_config

    return publish_files(load_config(args.config), args.files, sys.stdout)


def _ingest(args: argparse.Namespace) -> int:
    from consumer.commands.ingest import Ingest

    return _serve(args, Ingest)


def _ctl(args: argparse.Namespace) -> int:
    from consumer.config import load_config
    from consumer.state import control

    config = load_config(args.config, credentials=False)  # vendor secrets are not needed
    if args.action == "status":
        return control.status(config, sys.stdout)
    return control.set_paused(config, args.connection, args.action == "pause", sys.stdout)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asset-sync",
        description="Sync asset-change events from Kafka to vendor asset APIs.",
    )
    parser.add_argument("--version", action="version", version=f"asset-sync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the service: consume, validate, dispatch, dead-letter")
    run.add_argument("--config", type=Path, required=True)
    run.set_defaults(func=_run)

    validate = sub.add_parser("validate", help="validate events (one JSON event or JSON Lines)")
    validate.add_argument("files", type=Path, nargs="+", metavar="FILE")
    validate.set_defaults(func=_validate)

    dispatch = sub.add_parser("dispatch", help="deliver events straight to the vendors")
    dispatch.add_argument("--config", type=Path, required=True)
    dispatch.add_argument("files", type=Path, nargs="+", metavar="EVENT_FILE")
    dispatch.set_defaults(func=_dispatch)

    replay = sub.add_parser("replay", help="republish dead-letter records to the source topic")
    replay.add_argument("--config", type=Path, required=True)
    replay.add_argument("--reason")
    replay.add_argument("--vendor")
    replay.add_argument("--since", help="2h, 30m, 1d or an RFC 3339 time")
    replay.add_argument("--asset", metavar="ID", help="the event's asset id, exactly")
    replay.add_argument("--event-id", metavar="ID", help="the CloudEvents id, exactly")
    replay.add_argument("--limit", metavar="N")  # checked by make_filter: one-line error
    replay.add_argument(
        "--dry-run", action="store_true", help="list what would be replayed; commits nothing"
    )
    replay.set_defaults(func=_replay)

    publish = sub.add_parser("publish", help="validate events and produce them to the topic")
    publish.add_argument("--config", type=Path, required=True)
    publish.add_argument("files", type=Path, nargs="+", metavar="EVENTS")
    publish.set_defaults(func=_publish)

    ingest = sub.add_parser("ingest", help="accept signed webhooks and publish them")
    ingest.add_argument("--config", type=Path, required=True)
    ingest.set_defaults(func=_ingest)

    ctl = sub.add_parser("ctl", help="pause or resume a connection on every replica; status")
    actions = ctl.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("pause", "no new call to this connection on any replica; its events wait"),
        ("resume", "let its waiting events go again, in order"),
    ):
        paused = actions.add_parser(action, help=text)
        paused.add_argument("--config", type=Path, required=True)
        paused.add_argument("connection", metavar="VENDOR/CONNECTION")
    status = actions.add_parser("status", help="each connection's state, summed over replicas")
    status.add_argument("--config", type=Path, required=True)
    ctl.set_defaults(func=_ctl)

    demo = sub.add_parser("demo", help="the whole system on one machine")
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="leave everything up for exploring /metrics (Ctrl-C stops it)",
    )
    demo.add_argument("--events", type=int, default=40, help="updates per vendor")
    demo.add_argument("--bootstrap", help="use this broker instead of starting one")
    demo.add_argument("--workdir", type=Path, default=Path(".local/demo"))
    demo.add_argument("--quiet", action="store_true", help="no live vendor log")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (UsageError, ConfigError) as exc:
        print(f"asset-sync {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AssetSyncError as exc:  # e.g. an unreachable broker
        print(f"asset-sync {args.command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. a port that is taken
        print(f"asset-sync {args.command}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
