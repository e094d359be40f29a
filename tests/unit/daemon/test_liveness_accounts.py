"""/readyz with several accounts: a refused token or a pause names its account only."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, cast

from harvester.daemon.lanes import Lane
from harvester.daemon.liveness import Liveness
from harvester.scheduling import brakes
from harvester.scheduling.gate import Gate
from tests.support import configs, fakes

CFG = configs.loaded()


@dataclass
class StubWorker:
    last_tick: float = 0.0


@dataclass
class StubLane:
    name: str
    gate: Gate
    worker: StubWorker


def lanes(*names: str) -> list[Any]:
    return [
        StubLane(name, Gate(CFG, fakes.FakeLimiter()), StubWorker(float(n))) for n, name in enumerate(names)
    ]


def test_a_refused_account_is_named_and_the_others_are_not() -> None:
    found = lanes("a", "b", "c")
    found[1].gate.brakes = replace(brakes.Brakes(), auth_failed=True)
    health = Liveness(cast(list[Lane], found), pool=cast(Any, None))
    assert health.auth_ok is False
    assert health.credential_detail == "credential refused for account(s) b"
    assert health.paused_reason == "b: credential refused"
    assert health.last_tick == 0.0  # the stalest loop


def test_one_account_reads_as_before() -> None:
    found = lanes("default")
    health = Liveness(cast(list[Lane], found), pool=cast(Any, None))
    assert health.auth_ok and health.credential_detail is None and health.paused_reason is None
    found[0].gate.brakes = replace(brakes.Brakes(), auth_failed=True)
    assert health.paused_reason == "credential refused"
