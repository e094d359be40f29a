"""deploy/: the properties the operations docs promise, read from the files themselves."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from harvester import config
from harvester.daemon.health import start_server
from harvester.daemon.metrics import Metrics
from tests.support.paths import DEPLOY

UNIT = DEPLOY / "harvester.service"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / "harvester.env.example"
GRACE_S = config.WorkerConfig().shutdown_grace_s
SECRET_WORDS = re.compile(r"(api_key|api_secret|passw|token)\s*[=:]\s*\S", re.IGNORECASE)


def unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        sections[section][key].append(value)
    return sections


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", text.strip())
    assert match, text
    return float(match[1]) * (60 if match[2] == "min" else 1)


def understood(name: str) -> bool:
    """Whether the daemon's configuration reads this environment variable."""
    if name in config.ENV_NAMES or name in config.NOT_CONFIG_ENV:
        return True
    section, _, key = name.removeprefix("HARVESTER_").lower().partition("__")
    return section in config.SECTIONS and key in {
        f.name for f in dataclasses.fields(config.SECTIONS[section])
    }


def harvester_names(text: str) -> set[str]:
    return set(re.findall(r"\bHARVESTER_[A-Z0-9_]+", text))


# ---------------------------------------------------------------- systemd


def test_unit_is_notify_with_watchdog_and_restart() -> None:
    service = unit()["Service"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert seconds(service["WatchdogSec"][0]) == 30
    assert service["Restart"] == ["on-failure"]
    assert seconds(service["TimeoutStopSec"][0]) > GRACE_S


def test_unit_runs_migrate_then_the_daemon() -> None:
    service = unit()["Service"]
    assert [v.split()[-1] for v in service["ExecStartPre"]] == ["migrate"]
    assert [v.split()[-1] for v in service["ExecStart"]] == ["run"]


def test_unit_passes_the_token_as_a_credential() -> None:
    service = unit()["Service"]
    assert "api-token:/etc/harvester/api-token" in service["LoadCredential"]
    assert "HARVESTER_API_TOKEN_FILE=%d/api-token" in service["Environment"]
    assert service["EnvironmentFile"] == ["/etc/harvester/harvester.env"]
    assert not any(v.startswith("HARVESTER_API_TOKEN=") for v in service["Environment"])


def test_unit_is_hardened() -> None:
    service = unit()["Service"]
    assert service.get("DynamicUser") == ["yes"] or service.get("User") == ["harvester"]
    for key in (
        "NoNewPrivileges",
        "PrivateTmp",
        "ProtectHome",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "RestrictSUIDSGID",
        "LockPersonality",
    ):
        assert service[key] == ["yes"], key
    assert service["ProtectSystem"] == ["strict"]
    assert service["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert service["CapabilityBoundingSet"] == [""]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify wants the ExecStart binary to exist: point it at this interpreter's harvester script.
    script = Path(sys.executable).with_name("harvester")
    if not script.exists():
        pytest.skip("harvester console script not installed in this environment")
    copy = tmp_path / "harvester.service"
    copy.write_text(UNIT.read_text().replace("/opt/harvester/venv/bin/harvester", str(script)))
    result = subprocess.run(  # noqa: S603 - fixed argv
        ["systemd-analyze", "verify", str(copy)],  # noqa: S607 - found on PATH above
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_env_example_has_no_secrets_and_only_known_names() -> None:
    text = ENV_EXAMPLE.read_text()
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert all("=" in line for line in settings)
    names = {
        line.partition("=")[0].lstrip("#")
        for line in text.splitlines()
        if "=" in line and line.lstrip("#").startswith("HARVESTER_")
    }
    assert "HARVESTER_API_TOKEN" not in names
    assert all(understood(name) for name in names), names
    for line in settings:
        assert not SECRET_WORDS.search(line), line
        assert not re.search(r"://[^/@\s]+:[^/@\s]+@", line), line  # no password in a DSN


# ---------------------------------------------------------------- docker


def final_stage() -> list[str]:
    lines = DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    return lines[starts[-1] :]


def test_dockerfile_is_slim_python_and_runs_as_non_root() -> None:
    stage = final_stage()
    assert stage[0].split()[1] == "python:3.11-slim"
    users = [line.split()[1] for line in stage if line.startswith("USER ")]
    assert users, "no USER in the final stage"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_bakes_in_no_secrets() -> None:
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith(("ENV ", "ARG ", " ")):
            assert "HARVESTER_API_TOKEN=" not in line
            assert not SECRET_WORDS.search(line), line
    assert not re.search(r"COPY .*(token|secret|\.env\b)", DOCKERFILE.read_text(), re.IGNORECASE)


def test_dockerfile_listens_on_all_interfaces() -> None:
    text = DOCKERFILE.read_text()
    assert "HARVESTER_SERVER__LISTEN=0.0.0.0:9187" in text
    assert re.search(r"^EXPOSE 9187$", text, re.MULTILINE)
    assert all(understood(name) for name in harvester_names(text))


def healthcheck_command() -> list[str]:
    stage = final_stage()
    checks = [line for line in stage if line.startswith("HEALTHCHECK ")]
    assert len(checks) == 1
    command: list[str] = json.loads(checks[0].partition(" CMD ")[2])
    return command


def test_healthcheck_probes_healthz_with_python() -> None:
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"]
    assert "/healthz" in command[2]


async def test_healthcheck_command_follows_healthz() -> None:
    """The image's HEALTHCHECK, run for real: exit 0 while the loop ticks, non-zero when stale."""

    @dataclasses.dataclass
    class Health:
        last_tick: float = dataclasses.field(default_factory=time.monotonic)
        auth_ok: bool = True
        paused_reason: str | None = None
        discovery_detail: str | None = None

        async def db_ok(self) -> bool:
            return True

    health = Health()
    server = await start_server("127.0.0.1:0", Metrics(), health, stale_after_s=15.0)
    code = healthcheck_command()[2]
    env = {"HARVESTER_SERVER__LISTEN": f"0.0.0.0:{server.port}"}

    async def probe() -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await asyncio.wait_for(process.wait(), timeout=30)

    try:
        assert await probe() == 0
        health.last_tick -= 60
        assert await probe() != 0
    finally:
        await server.close()


def test_dockerignore_sends_only_what_the_build_needs() -> None:
    lines = [
        line
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "config.example.toml", "harvester", "sql"}


def compose() -> dict[str, object]:
    yaml = pytest.importorskip("yaml")
    document: dict[str, object] = yaml.safe_load(COMPOSE.read_text())
    return document


def test_compose_waits_for_a_healthy_postgres_and_migrates_first() -> None:
    services = compose()["services"]
    assert isinstance(services, dict)
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:15"
    assert "healthcheck" in postgres
    assert any(str(v).endswith("/var/lib/postgresql/data") for v in postgres["volumes"])
    daemon = services["harvester"]
    assert daemon["depends_on"]["postgres"] == {"condition": "service_healthy"}
    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert daemon["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert daemon["command"] == ["run"]
    assert seconds(daemon["stop_grace_period"]) > GRACE_S


def test_compose_passes_the_token_as_a_secret_file() -> None:
    document = compose()
    services = document["services"]
    assert isinstance(services, dict)
    for name in ("harvester", "migrate"):
        env = services[name]["environment"]
        assert env["HARVESTER_API_TOKEN_FILE"] == "/run/secrets/spideriq_token"
        assert "HARVESTER_API_TOKEN" not in env
        assert services[name]["secrets"] == ["spideriq_token"]
        assert all(understood(key) for key in env)
    assert document["secrets"] == {"spideriq_token": {"file": "./secrets/spideriq_token"}}
    assert "secrets/" in (DEPLOY / ".gitignore").read_text().split()


def test_compose_names_only_known_variables_without_yaml() -> None:
    assert all(understood(name) for name in harvester_names(COMPOSE.read_text()))
