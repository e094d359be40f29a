"""Fault injection: which misbehaviour, if any, a request to /results, /status or /list gets.

The fault plan is mutable at run time (``POST /_sim/faults``) and starts from the flags. Shares are
drawn independently per request from one seeded generator, in a fixed order (long Retry-After,
5xx, hang, reset, truncate), so a given seed and request sequence gives the same faults. Storms
(every request answered 429 for a while) are a time window on the simulated clock; a revoked
token is handled by authentication, not here. The event stream's faults (lost events, cuts, stalls,
refusals) and framing quirks live here too and are applied by :mod:`harvester.sim.events`.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Any

from harvester.sim.settings import FaultSettings


class Fault(enum.Enum):
    NONE = "none"
    STORM = "storm"
    LONG_RETRY_AFTER = "long_retry_after"
    ERROR_5XX = "5xx"
    HANG = "hang"
    RESET = "reset"
    TRUNCATE = "truncate"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The fault chosen for one request and the numbers it needs."""

    fault: Fault
    status: int = 0
    retry_after_s: int = 0


SHARE_KEYS = ("error_5xx", "hang", "reset", "truncate", "long_retry_after")
STREAM_SHARES = ("events_lost", "stream_noise", "stream_multiline")
REFUSALS = (None, "429", "503")
ALIASES = {
    "5xx": "error_5xx",
    "fault_5xx": "error_5xx",
    "fault_hang": "hang",
    "fault_reset": "reset",
    "fault_truncate": "truncate",
}


class FaultPlan:
    """Current fault shares and storm window; decides per request."""

    def __init__(self, settings: FaultSettings, seed: int, now: float) -> None:
        self.shares = {key: float(getattr(settings, key)) for key in SHARE_KEYS}
        self.long_retry_after_s = settings.long_retry_after_s
        self.hang_s = settings.hang_s
        self.storm_until = now + settings.storm_s if settings.storm_s > 0 else 0.0
        self.storm_retry_after_s: int | None = None
        self.forced: list[Fault] = []
        self._rng = random.Random(f"faults:{seed}")
        self.stream_shares = {key: float(getattr(settings, key)) for key in STREAM_SHARES}
        self.stream_cut_s = settings.stream_cut_s
        self.stream_stall = settings.stream_stall
        self.stream_refuse = settings.stream_refuse
        self.stream_refuse_retry_after_s = settings.stream_refuse_retry_after_s
        self.stream_crlf = settings.stream_crlf
        self.stream_retry_ms = settings.stream_retry_ms

    @property
    def events_lost(self) -> float:
        return self.stream_shares["events_lost"]

    def update(self, body: dict[str, Any], now: float) -> None:
        """Apply an admin request; raises ``ValueError`` on a bad key or value."""
        for raw_key, value in body.items():
            key = ALIASES.get(raw_key, raw_key)
            if key in SHARE_KEYS:
                share = float(value)
                if not 0.0 <= share <= 1.0:
                    raise ValueError(f"{raw_key} must be within 0..1")
                self.shares[key] = share
            elif key == "long_retry_after_s":
                self.long_retry_after_s = int(value)
            elif key == "hang_s":
                self.hang_s = float(value)
            elif key == "storm_s":
                self.storm_until = now + float(value) if float(value) > 0 else 0.0
            elif key == "storm_retry_after_s":
                self.storm_retry_after_s = None if value is None else int(value)
            elif key in STREAM_SHARES:
                share = float(value)
                if not 0.0 <= share <= 1.0:
                    raise ValueError(f"{raw_key} must be within 0..1")
                self.stream_shares[key] = share
            elif key == "stream_cut_s":
                cut = None if value is None else float(value)
                if cut is not None and cut <= 0:
                    raise ValueError("stream_cut_s must be positive or null")
                self.stream_cut_s = cut
            elif key == "stream_stall":
                self.stream_stall = bool(value)
            elif key == "stream_refuse":
                refuse = None if value is None else str(value)
                if refuse not in REFUSALS:
                    raise ValueError("stream_refuse must be '429', '503' or null")
                self.stream_refuse = refuse
            elif key == "stream_refuse_retry_after_s":
                self.stream_refuse_retry_after_s = int(value)
            elif key == "stream_crlf":
                self.stream_crlf = bool(value)
            elif key == "stream_retry_ms":
                self.stream_retry_ms = None if value is None else int(value)
            elif key == "next":
                self.forced = [Fault(item) for item in value]
            elif key == "clear":
                if value:
                    self.shares = dict.fromkeys(SHARE_KEYS, 0.0)
                    self.storm_until = 0.0
                    self.storm_retry_after_s = None
                    self.forced = []
                    self.stream_shares = dict.fromkeys(STREAM_SHARES, 0.0)
                    self.stream_cut_s = None
                    self.stream_stall = False
                    self.stream_refuse = None
                    self.stream_crlf = False
                    self.stream_retry_ms = None
            else:
                raise ValueError(f"unknown fault key: {raw_key}")

    def describe(self, now: float) -> dict[str, Any]:
        return {
            **self.shares,
            "long_retry_after_s": self.long_retry_after_s,
            "hang_s": self.hang_s,
            "storm_remaining_s": max(0.0, self.storm_until - now),
            "storm_retry_after_s": self.storm_retry_after_s,
            "next": [fault.value for fault in self.forced],
            **self.stream_shares,
            "stream_cut_s": self.stream_cut_s,
            "stream_stall": self.stream_stall,
            "stream_refuse": self.stream_refuse,
            "stream_refuse_retry_after_s": self.stream_refuse_retry_after_s,
            "stream_crlf": self.stream_crlf,
            "stream_retry_ms": self.stream_retry_ms,
        }

    def storm(self, now: float) -> Verdict | None:
        """A 429 for every request while a storm lasts (checked before the bucket)."""
        if now < self.storm_until:
            remaining = self.storm_until - now
            retry = self.storm_retry_after_s
            return Verdict(Fault.STORM, 429, retry if retry is not None else max(1, -int(-remaining // 1)))
        return None

    def choose(self) -> Verdict:
        """The fault for one request that passed auth and the bucket."""
        if self.forced:
            fault = self.forced.pop(0)
            return self._verdict(fault)
        for key, fault in (
            ("long_retry_after", Fault.LONG_RETRY_AFTER),
            ("error_5xx", Fault.ERROR_5XX),
            ("hang", Fault.HANG),
            ("reset", Fault.RESET),
            ("truncate", Fault.TRUNCATE),
        ):
            share = self.shares[key]
            if share > 0 and self._rng.random() < share:
                return self._verdict(fault)
        return Verdict(Fault.NONE)

    def _verdict(self, fault: Fault) -> Verdict:
        if fault is Fault.ERROR_5XX:
            return Verdict(fault, self._rng.choice((500, 502, 503)))
        if fault in (Fault.LONG_RETRY_AFTER, Fault.STORM):
            return Verdict(fault, 429, self.long_retry_after_s)
        return Verdict(fault)
