"""The aiohttp application: SpiderIQ's job and system endpoints, with auth and rate limiting.

Each authenticated request goes through :func:`harvester.sim.auth.guard`: parse the Bearer token,
find the credential, count the request in its rate meter, answer 429 during a storm or when the
bucket is empty, and otherwise pick the fault (for /results, /status and /list). Every answer to an
identified credential carries the ``X-RateLimit-*`` headers. Admin endpoints live in
:mod:`harvester.sim.admin`, the event stream in :mod:`harvester.sim.events`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from harvester.sim import admin, events, submit
from harvester.sim.auth import Passed, guard
from harvester.sim.bodies import (
    NOT_FOUND,
    cancel_body,
    health_body,
    list_row,
    queue_stats_body,
    results_body,
    status_body,
)
from harvester.sim.clock import Clock, SimClock
from harvester.sim.delivery import deliver, json_response
from harvester.sim.faults import Fault
from harvester.sim.jobs import STATUSES, TERMINAL, Job
from harvester.sim.settings import SimSettings
from harvester.sim.state import STATE_KEY, SimState

SORT_KEYS = ("created_at", "updated_at", "status")


async def answer(
    request: web.Request, endpoint: str, passed: Passed, status: int, body: Any
) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fault = passed.verdict.fault
    outcome = {Fault.HANG: "hang", Fault.RESET: "reset", Fault.TRUNCATE: "truncated"}.get(fault, str(status))
    state.record(endpoint, outcome, passed.cred.client_id)
    return await deliver(request, status, body, passed.headers, fault, state.faults.hang_s)


async def get_results(request: web.Request) -> web.StreamResponse:
    passed = guard(request, "results", faultable=True)
    if isinstance(passed, web.Response):
        return passed
    state = request.app[STATE_KEY]
    job = state.owned_job(passed.cred, request.match_info["job_id"])
    if job is None:
        return await answer(request, "results", passed, 404, NOT_FOUND)
    now = state.clock.now()
    status, body = results_body(state.clock, job, now, state.settings.seed, state.settings.variants)
    job.fetches += 1
    job.fetch_codes[status] = job.fetch_codes.get(status, 0) + 1
    if status in (200, 410) and passed.verdict.fault is Fault.NONE:
        job.fetches_done += 1
    return await answer(request, "results", passed, status, body)


async def get_status(request: web.Request) -> web.StreamResponse:
    passed = guard(request, "status", faultable=True)
    if isinstance(passed, web.Response):
        return passed
    state = request.app[STATE_KEY]
    job = state.owned_job(passed.cred, request.match_info["job_id"])
    if job is None:
        return await answer(request, "status", passed, 404, NOT_FOUND)
    return await answer(request, "status", passed, 200, status_body(state.clock, job, state.clock.now()))


def _query_error(loc: str, msg: str, kind: str, value: str | None) -> dict[str, Any]:
    return {"detail": [{"type": kind, "loc": ["query", loc], "msg": msg, "input": value}]}


@dataclass(frozen=True, slots=True)
class ListQuery:
    """The validated parameters of ``GET /jobs/list``."""

    page: int = 1
    page_size: int = 50
    status_filter: str | None = None
    type_filter: str | None = None
    sort_by: str = "created_at"
    sort_order: str = "desc"


def parse_list_query(query: Mapping[str, str]) -> ListQuery | dict[str, Any]:
    """Validated parameters, or a FastAPI-style 422 body."""
    ints: dict[str, int] = {}
    for name, default, lo, hi in (("page", 1, 1, None), ("page_size", 50, 1, 100)):
        raw = query.get(name)
        try:
            value = default if raw is None else int(raw)
        except ValueError:
            return _query_error(name, "Input should be a valid integer", "int_parsing", raw)
        if value < lo:
            return _query_error(
                name, f"Input should be greater than or equal to {lo}", "greater_than_equal", raw
            )
        if hi is not None and value > hi:
            return _query_error(name, f"Input should be less than or equal to {hi}", "less_than_equal", raw)
        ints[name] = value
    enums: dict[str, str | None] = {}
    for name, allowed in (
        ("status_filter", STATUSES),
        ("sort_by", SORT_KEYS),
        ("sort_order", ("asc", "desc")),
    ):
        raw = query.get(name)
        if raw is not None and raw not in allowed:
            msg = "Input should be " + ", ".join(repr(a) for a in allowed)
            return _query_error(name, msg, "enum", raw)
        enums[name] = raw
    return ListQuery(
        page=ints["page"],
        page_size=ints["page_size"],
        status_filter=enums["status_filter"],
        type_filter=query.get("type_filter") or None,
        sort_by=enums["sort_by"] or "created_at",
        sort_order=enums["sort_order"] or "desc",
    )


async def get_list(request: web.Request) -> web.StreamResponse:
    passed = guard(request, "list", faultable=True)
    if isinstance(passed, web.Response):
        return passed
    state = request.app[STATE_KEY]
    params = parse_list_query(request.query)
    if not isinstance(params, ListQuery):
        return await answer(request, "list", passed, 422, params)
    now = state.clock.now()
    jobs = [state.jobs[jid] for jid in passed.cred.job_ids]
    if params.type_filter:
        jobs = [job for job in jobs if job.type == params.type_filter]
    # Status is computed once per job: lists of many thousand jobs stay cheap.
    keyed = [(job.status_at(now), job) for job in jobs]
    if params.status_filter:
        keyed = [(status, job) for status, job in keyed if status == params.status_filter]

    def sort_key(item: tuple[str, Job]) -> tuple[Any, str]:
        status, job = item
        if params.sort_by == "status":
            return status, job.job_id
        if params.sort_by == "created_at":
            return job.created_at, job.job_id
        return job.updated_at(now), job.job_id

    keyed.sort(key=sort_key, reverse=params.sort_order == "desc")
    page, size = params.page, params.page_size
    body = {
        "total": len(keyed),
        "page": page,
        "page_size": size,
        "total_pages": math.ceil(len(keyed) / size),
        "jobs": [list_row(state.clock, job, now) for _, job in keyed[(page - 1) * size : page * size]],
    }
    return await answer(request, "list", passed, 200, body)


async def delete_job(request: web.Request) -> web.StreamResponse:
    passed = guard(request, "cancel", faultable=False)
    if isinstance(passed, web.Response):
        return passed
    state = request.app[STATE_KEY]
    job = state.owned_job(passed.cred, request.match_info["job_id"])
    if job is None:
        return await answer(request, "cancel", passed, 404, NOT_FOUND)
    now = state.clock.now()
    status = job.status_at(now)
    if status == "completed":
        return await answer(request, "cancel", passed, 400, {"detail": "Cannot cancel a completed job"})
    if status in TERMINAL:
        return await answer(request, "cancel", passed, 400, {"detail": f"Job is already {status}"})
    job.cancel(now)
    state.hub.notify()
    return await answer(request, "cancel", passed, 200, cancel_body(job))


async def post_submit(request: web.Request) -> web.StreamResponse:
    job_type = request.match_info.get("job_type")
    passed = guard(request, "submit", faultable=False)
    if isinstance(passed, web.Response):
        return passed
    status, body = await submit.handle(request, request.app[STATE_KEY], passed.cred, job_type)
    return await answer(request, "submit", passed, status, body)


async def get_health(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.record("health", "200", "-")
    return json_response(200, health_body(state.clock, state.clock.now()))


async def get_queue_stats(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.record("queue_stats", "200", "-")
    now = state.clock.now()
    return json_response(200, queue_stats_body(state.clock, now, list(state.jobs.values())))


def build_app(settings: SimSettings, clock: Clock | None = None) -> web.Application:
    """The simulator as an aiohttp application; ``clock`` lets tests drive time by hand."""
    app = web.Application()
    state = SimState(settings, clock or SimClock(settings.speed, settings.epoch))
    app[STATE_KEY] = state
    if settings.initial_jobs:
        admin.create_initial_jobs(state, settings.initial_jobs)
    api = "/api/v1"
    app.router.add_get(api + "/jobs/list", get_list)
    app.router.add_get(api + "/jobs/{job_id}/results", get_results)
    app.router.add_get(api + "/jobs/{job_id}/status", get_status)
    app.router.add_delete(api + "/jobs/{job_id}", delete_job)
    app.router.add_post(api + "/jobs/submit", post_submit)
    app.router.add_post(api + "/jobs/{job_type}/submit", post_submit)
    app.router.add_get(api + "/system/health", get_health)
    app.router.add_get(api + "/system/queue-stats", get_queue_stats)
    events.add_routes(app)
    admin.add_routes(app)
    return app
