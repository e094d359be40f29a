"""Command-line face of the simulator: ``harvester sim`` and ``python -m harvester.sim``.

``add_arguments`` declares the flags on a parser the main CLI owns; ``serve`` runs the server until
it is cancelled or receives SIGTERM/SIGINT, printing one line with the URL once it listens. Nothing
else goes to stdout, and tokens are never printed (only their count).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
from datetime import UTC, datetime

from harvester.sim.jobs import RUN_CAP, SHAPES
from harvester.sim.server import SimServer
from harvester.sim.settings import DEFAULT_TOKEN, FaultSettings, SimSettings
from harvester.sim.state import split_token


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be within 0..1")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _reported_share(text: str) -> float | None:
    if text.strip().lower() in ("null", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError("must be within (0, 1], or null")
    return value


def _token(text: str) -> str:
    if split_token(text) is None:
        raise argparse.ArgumentTypeError("expected client_id:api_key:api_secret")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the simulator's flags on ``parser``."""
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, default=8765, help="port to listen on (default 8765; 0 = any free)")
    add(
        "--speed",
        type=_positive,
        default=1.0,
        help="time factor: durations shrink and the rate limit grows by X (default 1)",
    )
    add("--seed", type=int, default=0, help="seed for job ids, outcomes and data (default 0)")
    add(
        "--token",
        action="append",
        type=_token,
        metavar="T",
        help=f"accepted credential client_id:api_key:api_secret, repeatable (default {DEFAULT_TOKEN})",
    )
    add(
        "--inactive-token",
        action="append",
        type=_token,
        default=[],
        metavar="T",
        help="a credential that exists but is inactive (answered 403), repeatable",
    )
    add("--rate-per-minute", type=_positive, default=100.0, help="sustained rate (default 100)")
    add("--burst", type=int, default=20, help="bucket size (default 20)")
    add("--fail-rate", type=_share, default=0.05, help="share of jobs that fail (default 0.05)")
    add(
        "--cancel-rate",
        type=_share,
        default=0.02,
        help="share of jobs the user cancels (default 0.02)",
    )
    add(
        "--run-time-shape",
        choices=SHAPES,
        default="uniform",
        help="how run times spread within a type's range: uniform, or lognormal with the range's "
        f"midpoint as median (heavy-tailed, capped at {RUN_CAP:g}x it) (default uniform)",
    )
    add("--run-time-sigma", type=_positive, default=1.0, help="sigma of lognormal run times (default 1)")
    add(
        "--processing-time-share",
        type=_reported_share,
        default=1.0,
        metavar="S",
        help="share of a job's run that its processing time reports, 0 < S <= 1, or null to report "
        "null (default 1)",
    )
    add("--jobs", type=int, default=0, help="create N jobs at start-up for the first token")
    add(
        "--revoked-status",
        type=int,
        choices=(401, 403),
        default=401,
        help="status for revoked tokens (default 401)",
    )
    add(
        "--no-variants",
        action="store_true",
        help="only the canonical body shapes (no legacy layouts, 'running', naive timestamps)",
    )
    add("--fault-5xx", type=_share, default=0.0, help="share answered 500/502/503")
    add("--fault-hang", type=_share, default=0.0, help="share that hang (see --hang-seconds)")
    add("--fault-reset", type=_share, default=0.0, help="share whose connection is reset")
    add("--fault-truncate", type=_share, default=0.0, help="share with a truncated body")
    add(
        "--fault-long-retry-after",
        type=_share,
        default=0.0,
        help="share answered 429 with a long Retry-After (a budget refusal)",
    )
    add("--long-retry-after", type=int, default=3600, help="that Retry-After in seconds (3600)")
    add("--hang-seconds", type=_positive, default=300.0, help="real seconds a hang lasts (300)")
    add(
        "--storm-seconds",
        type=float,
        default=0.0,
        help="answer every request 429 for this many simulated seconds from start-up",
    )
    add(
        "--queue-starts-per-minute",
        type=_positive,
        default=None,
        metavar="N",
        help="a busy queue: jobs start no faster than N a minute, FIFO (default unlimited)",
    )
    add("--events-lost", type=_share, default=0.0, help="share of job events never sent on the stream")
    add(
        "--stream-cut-seconds",
        type=_positive,
        default=None,
        help="close every event stream after this many simulated seconds",
    )
    add("--stream-stall", action="store_true", help="streams send nothing (no heartbeats) but stay open")
    add(
        "--stream-refuse",
        choices=("429", "503"),
        default=None,
        help="refuse new event streams with 429 or 503 (with Retry-After)",
    )
    add(
        "--stream-refuse-retry-after",
        type=int,
        default=30,
        help="Retry-After of a refused stream, seconds (default 30)",
    )
    add(
        "--stream-noise",
        type=_share,
        default=0.05,
        help="share of job events followed by a campaign event, unknown event or comment (0.05)",
    )
    add("--stream-crlf", action="store_true", help="end the stream's lines with CRLF")
    add(
        "--stream-multiline",
        type=_share,
        default=0.0,
        help="share of events whose data is split over two data: lines",
    )
    add("--stream-retry-ms", type=int, default=None, help="send a retry: line with this value on connect")
    add(
        "--heartbeat-seconds",
        type=_positive,
        default=30.0,
        help="simulated seconds between heartbeats (default 30)",
    )
    add(
        "--epoch",
        type=_epoch,
        default=None,
        help="simulated wall time at start-up (ISO-8601); fixes timestamps for reproducible runs",
    )


def _epoch(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        message = "expected an ISO-8601 time, e.g. 2025-10-27T10:00:00Z"
        raise argparse.ArgumentTypeError(message) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def settings_from(args: argparse.Namespace) -> SimSettings:
    faults = FaultSettings(
        error_5xx=args.fault_5xx,
        hang=args.fault_hang,
        reset=args.fault_reset,
        truncate=args.fault_truncate,
        long_retry_after=args.fault_long_retry_after,
        long_retry_after_s=args.long_retry_after,
        hang_s=args.hang_seconds,
        storm_s=args.storm_seconds,
        events_lost=args.events_lost,
        stream_cut_s=args.stream_cut_seconds,
        stream_stall=args.stream_stall,
        stream_refuse=args.stream_refuse,
        stream_refuse_retry_after_s=args.stream_refuse_retry_after,
        stream_noise=args.stream_noise,
        stream_crlf=args.stream_crlf,
        stream_multiline=args.stream_multiline,
        stream_retry_ms=args.stream_retry_ms,
    )
    return SimSettings(
        host=args.host,
        port=args.port,
        speed=args.speed,
        seed=args.seed,
        tokens=tuple(args.token or [DEFAULT_TOKEN]),
        inactive_tokens=tuple(args.inactive_token),
        rate_per_minute=args.rate_per_minute,
        burst=args.burst,
        fail_rate=args.fail_rate,
        cancel_rate=args.cancel_rate,
        revoked_status=args.revoked_status,
        run_time_shape=args.run_time_shape,
        run_time_sigma=args.run_time_sigma,
        processing_time_share=args.processing_time_share,
        variants=not args.no_variants,
        initial_jobs=args.jobs,
        epoch=args.epoch,
        queue_starts_per_minute=args.queue_starts_per_minute,
        heartbeat_s=args.heartbeat_seconds,
        faults=faults,
    )


async def serve(args: argparse.Namespace) -> int:
    """Run until cancelled or signalled: 0 on a clean stop, 2 on bad settings, 1 if unbindable."""
    try:
        settings = settings_from(args)
    except ValueError as exc:
        print(f"harvester sim: {exc}", file=sys.stderr)
        return 2
    server = SimServer(settings, host=settings.host, port=settings.port)
    try:
        url = await server.start()
    except OSError as exc:
        print(
            f"harvester sim: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    print(
        f"SpiderIQ simulator listening on {url} (speed {settings.speed:g}, seed "
        f"{settings.seed}, {len(settings.tokens)} token(s))",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harvester sim", description="Run the SpiderIQ API simulator.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 0
