"""The simulator's command line: flags, the listening line, clean stop on cancel and SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import aiohttp
import pytest

from harvester.sim.cli import add_arguments, serve, settings_from


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults() -> None:
    settings = settings_from(parse())
    assert (settings.host, settings.port, settings.speed) == ("127.0.0.1", 8765, 1.0)
    assert settings.tokens == ("demo:demo:demo",)
    assert (settings.rate_per_minute, settings.burst) == (100.0, 20)


def test_flags_reach_the_settings() -> None:
    args = parse(
        "--speed",
        "30",
        "--seed",
        "9",
        "--token",
        "a:b:c",
        "--token",
        "d:e:f",
        "--fault-5xx",
        "0.1",
        "--fault-hang",
        "0.01",
        "--fault-reset",
        "0.02",
        "--fault-truncate",
        "0.03",
        "--fail-rate",
        "0.2",
        "--cancel-rate",
        "0.1",
        "--epoch",
        "2025-10-27T10:00:00Z",
    )
    settings = settings_from(args)
    assert settings.speed == 30 and settings.seed == 9
    assert settings.tokens == ("a:b:c", "d:e:f")
    assert (
        settings.faults.error_5xx,
        settings.faults.hang,
        settings.faults.reset,
        settings.faults.truncate,
    ) == (0.1, 0.01, 0.02, 0.03)
    assert (settings.fail_rate, settings.cancel_rate) == (0.2, 0.1)
    assert settings.epoch == 1761559200.0


@pytest.mark.parametrize(
    "argv",
    [["--token", "nocolons"], ["--fault-5xx", "2"], ["--speed", "0"], ["--epoch", "yesterday"]],
)
def test_bad_flags_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2


async def test_serve_prints_one_line_and_stops_when_cancelled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    task = asyncio.create_task(serve(parse("--port", "0", "--token", "x:y:z", "--jobs", "3")))
    for _ in range(100):
        await asyncio.sleep(0.02)
        out = capsys.readouterr().out
        if out:
            break
    assert out.count("\n") == 1 and "http://127.0.0.1:" in out
    assert "y:z" not in out
    url = out.split()[out.split().index("on") + 1]
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{url}/api/v1/jobs/list", headers={"Authorization": "Bearer x:y:z"}) as resp,
    ):
        assert resp.status == 200 and (await resp.json())["total"] == 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_module_entry_point_exits_0_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harvester.sim",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
    assert line.startswith(b"SpiderIQ simulator listening on http://127.0.0.1:")
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 0
    assert out == b"" and err == b""


def test_stream_and_queue_flags_reach_the_settings() -> None:
    settings = settings_from(
        parse(
            "--queue-starts-per-minute",
            "20",
            "--events-lost",
            "0.03",
            "--stream-cut-seconds",
            "600",
            "--stream-stall",
            "--stream-refuse",
            "503",
            "--stream-refuse-retry-after",
            "9",
            "--stream-noise",
            "0.1",
            "--stream-crlf",
            "--stream-multiline",
            "0.2",
            "--stream-retry-ms",
            "3000",
            "--heartbeat-seconds",
            "15",
        )
    )
    f = settings.faults
    assert settings.queue_starts_per_minute == 20.0 and settings.heartbeat_s == 15.0
    assert (f.events_lost, f.stream_cut_s, f.stream_stall, f.stream_refuse) == (0.03, 600.0, True, "503")
    assert (f.stream_refuse_retry_after_s, f.stream_noise, f.stream_crlf) == (9, 0.1, True)
    assert (f.stream_multiline, f.stream_retry_ms) == (0.2, 3000)
    defaults = settings_from(parse())
    assert defaults.queue_starts_per_minute is None and defaults.faults.stream_refuse is None


def test_run_time_flags_reach_the_settings() -> None:
    defaults = settings_from(parse())
    assert (defaults.run_time_shape, defaults.run_time_sigma, defaults.processing_time_share) == (
        "uniform",
        1.0,
        1.0,
    )
    shaped = settings_from(
        parse("--run-time-shape", "lognormal", "--run-time-sigma", "0.8", "--processing-time-share", "0.5")
    )
    assert (shaped.run_time_shape, shaped.run_time_sigma, shaped.processing_time_share) == (
        "lognormal",
        0.8,
        0.5,
    )
    assert settings_from(parse("--processing-time-share", "null")).processing_time_share is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--processing-time-share", "0"],
            "argument --processing-time-share: must be within (0, 1], or null",
        ),
        (
            ["--processing-time-share", "1.5"],
            "argument --processing-time-share: must be within (0, 1], or null",
        ),
        (
            ["--processing-time-share", "half"],
            "argument --processing-time-share: must be within (0, 1], or null",
        ),
        (["--run-time-shape", "pareto"], "argument --run-time-shape: invalid choice: 'pareto'"),
        (["--run-time-sigma", "-1"], "argument --run-time-sigma: must be positive"),
    ],
)
def test_bad_run_time_flags_are_usage_errors_that_say_why(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


async def test_a_sigma_the_settings_refuse_exits_2_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await serve(parse("--port", "0", "--run-time-sigma", "inf")) == 2
    assert capsys.readouterr().err == "harvester sim: run_time_sigma must be a positive number\n"


async def test_the_command_refuses_a_bad_share_with_exit_2() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harvester.sim",
        "--port",
        "0",
        "--processing-time-share",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 2 and out == b""
    assert b"argument --processing-time-share: must be within (0, 1], or null" in err
