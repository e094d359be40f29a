"""SpiderIQ simulator: a faithful, time-scaled stand-in for the jobs API (SPEC section 7).

It imports nothing from the rest of harvester on purpose: a stand-in that shares the code it is
meant to check would hide exactly the bugs it exists to find. Entry points: ``build_app`` (the
aiohttp application), ``SimServer`` (in-process server for tests) and ``harvester.sim.cli``
(``harvester sim``).
"""

from __future__ import annotations

from harvester.sim.app import build_app
from harvester.sim.clock import ManualClock, SimClock
from harvester.sim.server import SimServer, submit_mix
from harvester.sim.settings import FaultSettings, SimSettings
from harvester.sim.state import STATE_KEY, SimState

__all__ = [
    "STATE_KEY",
    "FaultSettings",
    "ManualClock",
    "SimClock",
    "SimServer",
    "SimSettings",
    "SimState",
    "build_app",
    "submit_mix",
]
