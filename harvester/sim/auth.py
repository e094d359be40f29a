"""Authentication and rate limiting, shared by every authenticated endpoint.

:func:`check` takes a token (from the Bearer header, or from the query string for the event
stream), finds the credential, counts the request in its rate meter, answers 429 during a storm or
when the bucket is empty, and otherwise picks the fault (for /results, /status and /list). Every
answer to an identified credential carries the ``X-RateLimit-*`` headers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from harvester.sim.delivery import json_response
from harvester.sim.faults import Fault, Verdict
from harvester.sim.ratelimit import Decision
from harvester.sim.state import STATE_KEY, Credential, SimState, split_token

BAD_FORMAT = {"detail": "Invalid authentication token format. Expected: client_id:api_key:api_secret"}
UNKNOWN = {"detail": "Invalid API credentials"}
INACTIVE = {"detail": "Client account is inactive"}
REVOKED = {"detail": "API credentials have been revoked"}
RATE_LIMITED = {"detail": "Rate limit exceeded"}
BUDGET = {"detail": "Daily cost ceiling reached; retry after the reset"}
SERVER_ERRORS = {500: "Internal server error", 502: "Bad gateway", 503: "Queue service unavailable"}


@dataclass(frozen=True, slots=True)
class Passed:
    """A request that may proceed: its credential, rate headers and chosen fault."""

    cred: Credential
    headers: dict[str, str]
    verdict: Verdict


def rate_headers(state: SimState, decision: Decision) -> dict[str, str]:
    now = state.clock.now()
    reset = math.ceil(state.clock.real_wall(now + decision.full_in_s))
    return {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(max(0, decision.remaining)),
        "X-RateLimit-Reset": str(reset),
    }


def too_many(
    state: SimState,
    endpoint: str,
    cred: Credential,
    headers: dict[str, str],
    retry_after: int,
    body: dict[str, Any],
) -> web.Response:
    state.record(endpoint, "429", cred.client_id)
    return json_response(429, body, {**headers, "Retry-After": str(retry_after)})


def guard(request: web.Request, endpoint: str, faultable: bool) -> Passed | web.Response:
    """Authenticate by the ``Authorization: Bearer`` header."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return check(request.app[STATE_KEY], token if scheme.lower() == "bearer" else None, endpoint, faultable)


def check(state: SimState, token: str | None, endpoint: str, faultable: bool) -> Passed | web.Response:
    """Authenticate ``token`` (None = absent), then count it and apply the limit and the faults."""
    if token is None or split_token(token) is None:
        state.record(endpoint, "401", "-")
        return json_response(401, BAD_FORMAT, {"WWW-Authenticate": "Bearer"})
    cred = state.credentials.get(token)
    if cred is None or cred.bucket is None or cred.meter is None:
        state.record(endpoint, "401", "-")
        return json_response(401, UNKNOWN, {"WWW-Authenticate": "Bearer"})
    if cred.status == "inactive":
        state.record(endpoint, "403", cred.client_id)
        return json_response(403, INACTIVE, rate_headers(state, cred.bucket.peek(state.clock.now())))
    if cred.status == "revoked":
        state.record(endpoint, str(cred.revoked_status), cred.client_id)
        headers = rate_headers(state, cred.bucket.peek(state.clock.now()))
        return json_response(cred.revoked_status, REVOKED, headers)
    now = state.clock.now()
    cred.meter.record(now)
    storm = state.faults.storm(now)
    if storm is not None:
        state.faults_served["storm"] += 1
        headers = rate_headers(state, cred.bucket.peek(now))
        return too_many(state, endpoint, cred, headers, storm.retry_after_s, RATE_LIMITED)
    decision = cred.bucket.take(now)
    headers = rate_headers(state, decision)
    if not decision.allowed:
        return too_many(
            state, endpoint, cred, headers, max(1, math.ceil(decision.retry_after_s)), RATE_LIMITED
        )
    verdict = state.faults.choose() if faultable else Verdict(Fault.NONE)
    if verdict.fault is not Fault.NONE:
        state.faults_served[verdict.fault.value] += 1
    if verdict.fault is Fault.LONG_RETRY_AFTER:
        return too_many(state, endpoint, cred, headers, verdict.retry_after_s, BUDGET)
    if verdict.fault is Fault.ERROR_5XX:
        state.record(endpoint, str(verdict.status), cred.client_id)
        return json_response(verdict.status, {"detail": SERVER_ERRORS[verdict.status]}, headers)
    return Passed(cred, headers, verdict)
