"""Admin endpoints under ``/_sim/`` (no auth, no rate limit): stats, bulk jobs, tokens, faults.

``POST /_sim/jobs`` creates many jobs at once for benchmarks and tests; ``POST /_sim/tokens`` adds,
revokes, restores, deactivates or reactivates a credential; ``POST /_sim/faults`` changes the fault
plan; ``POST /_sim/queue`` sets the busy queue's pace; ``POST /_sim/run-times`` the shape of new
jobs' run times and the share of a run they report; ``GET /_sim/stats`` reports what was served;
``GET /_sim/jobs/{id}`` shows a job's internal state. Errors are ``400 {"detail": ...}``. Tokens
are named by their ``client_id`` in answers.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

from aiohttp import web

from harvester.sim import words as w
from harvester.sim.data_site import company
from harvester.sim.delivery import json_response
from harvester.sim.jobs import MAPS, OUTCOMES, SITE, Plan
from harvester.sim.state import STATE_KEY, Credential, SimState

MAX_BULK = 1_000_000
# POST /_sim/run-times keys (the settings' names) -> RunTimes fields
RUN_TIME_KEYS = {"run_time_shape": "shape", "run_time_sigma": "sigma", "processing_time_share": "share"}


def bad(detail: str) -> web.Response:
    return json_response(400, {"detail": detail})


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    parsed = json.loads(raw)
    if not isinstance(parsed, dict):
        raise ValueError("body must be a JSON object")
    return parsed


def sample_payload(rng: random.Random, job_type: str) -> dict[str, Any]:
    """A plausible payload for a bulk-created job (deterministic given the generator)."""
    if job_type == SITE:
        return {
            "url": f"https://{company(rng)[1]}",
            "mode": rng.choice(("contacts", "compendium", "leads", "full")),
        }
    if job_type == MAPS:
        category, city = rng.choice(w.CATEGORIES)[0], rng.choice(w.CITIES)[0]
        return {
            "search_query": f"{category} in {city}",
            "max_results": rng.choice((10, 20, 20, 50)),
        }
    if job_type == "spiderVerify":
        return {"emails": [f"info@{company(rng)[1]}" for _ in range(rng.randint(1, 3))]}
    return {"input": company(rng)[1]}


def _range(value: Any, name: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value), float(value)
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        lo, hi = float(value[0]), float(value[1])
        if 0 <= lo <= hi:
            return lo, hi
    raise ValueError(f"{name} must be a number or [low, high]")


def create_jobs(
    state: SimState,
    cred: Credential,
    count: int,
    job_type: str,
    plan: Plan,
    payload: dict[str, Any] | None = None,
) -> list[str]:
    rng = random.Random(f"bulk:{state.settings.seed}:{len(state.jobs)}")
    ids = []
    for _ in range(count):
        body = payload if payload is not None else sample_payload(rng, job_type)
        ids.append(state.create_job(cred, job_type, body, 0, plan).job_id)
    return ids


def create_initial_jobs(state: SimState, count: int) -> None:
    """The ``--jobs N`` start-up set: a site/maps mix for the first credential."""
    cred = next(iter(state.credentials.values()))
    rng = random.Random(f"initial:{state.settings.seed}")
    for _ in range(count):
        job_type = SITE if rng.random() < 0.7 else MAPS
        create_jobs(state, cred, 1, job_type, Plan())


async def post_jobs(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        body = await _body(request)
        count = int(body.get("count", 1))
        job_type = str(body.get("type", SITE))
        outcome = body.get("outcome")
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError("outcome must be completed, failed or cancelled")
        plan = Plan(
            duration_s=_range(body.get("duration_s"), "duration_s"),
            outcome=outcome,
            start_offset_s=float(body.get("start_offset_s", 0.0)),
        )
        payload = body.get("payload")
        if payload is not None and not isinstance(payload, dict):
            raise ValueError("payload must be an object")
    except (ValueError, TypeError) as exc:
        return bad(str(exc))
    if not 0 <= count <= MAX_BULK:
        return bad(f"count must be within 0..{MAX_BULK}")
    token = body.get("token")
    cred = state.credential(str(token)) if token is not None else next(iter(state.credentials.values()), None)
    if cred is None:
        return bad("unknown token")
    ids = create_jobs(state, cred, count, job_type, plan, payload)
    return json_response(
        201, {"job_ids": ids, "count": len(ids), "type": job_type, "client_id": cred.client_id}
    )


async def get_job(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    job = state.jobs.get(request.match_info["job_id"].lower())
    if job is None:
        return json_response(404, {"detail": "Job not found"})
    info = job.describe(state.clock.now())
    info["owner"] = job.owner.split(":", 1)[0]
    return json_response(200, info)


async def post_tokens(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        body = await _body(request)
        token = str(body["token"])
        action = str(body.get("action", "add"))
        if action == "add":
            cred = state.add_credential(token, body.get("rate_per_minute"), body.get("burst"))
            cred.status = "active"
        else:
            found = state.credential(token)
            if found is None:
                return bad("unknown token")
            cred = found
            if action == "revoke":
                cred.status = "revoked"
                status = int(body.get("status", cred.revoked_status))
                if status not in (401, 403):
                    raise ValueError("status must be 401 or 403")
                cred.revoked_status = status
            elif action == "deactivate":
                cred.status = "inactive"
            elif action in ("restore", "activate"):
                cred.status = "active"
            else:
                raise ValueError("action must be add, revoke, restore, deactivate or activate")
    except (KeyError, ValueError, TypeError) as exc:
        return bad(f"bad request: {exc}")
    state.hub.notify()  # open streams of a revoked or deactivated token end with an error event
    return json_response(
        200,
        {"client_id": cred.client_id, "status": cred.status, "revoked_status": cred.revoked_status},
    )


async def post_faults(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        state.faults.update(await _body(request), state.clock.now())
    except (ValueError, TypeError) as exc:
        return bad(str(exc))
    return json_response(200, state.faults.describe(state.clock.now()))


async def get_faults(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return json_response(200, state.faults.describe(state.clock.now()))


async def post_queue(request: web.Request) -> web.Response:
    """Change the busy queue's pace at run time: ``{"starts_per_minute": 20}`` or ``null``."""
    state = request.app[STATE_KEY]
    try:
        body = await _body(request)
        raw = body.get("starts_per_minute")
        rate = None if raw is None else float(raw)
        if rate is not None and rate <= 0:
            raise ValueError("starts_per_minute must be positive or null")
    except (ValueError, TypeError) as exc:
        return bad(str(exc))
    state.queue_starts_per_minute = rate
    return json_response(200, {"starts_per_minute": rate})


async def get_queue(request: web.Request) -> web.Response:
    return json_response(200, {"starts_per_minute": request.app[STATE_KEY].queue_starts_per_minute})


async def post_run_times(request: web.Request) -> web.Response:
    """Change new jobs' run times at run time: any of ``run_time_shape``, ``run_time_sigma`` and
    ``processing_time_share`` (``null``: reported as null). Jobs already created keep theirs."""
    state = request.app[STATE_KEY]
    try:
        body = await _body(request)
        unknown = sorted(set(body) - set(RUN_TIME_KEYS))
        if unknown:
            raise ValueError(f"unknown run-time key: {unknown[0]}")
        run_times = dataclasses.replace(
            state.run_times, **{RUN_TIME_KEYS[key]: value for key, value in body.items()}
        )
    except (ValueError, TypeError) as exc:
        return bad(str(exc))
    state.run_times = run_times
    return json_response(200, run_times.describe())


async def get_run_times(request: web.Request) -> web.Response:
    return json_response(200, request.app[STATE_KEY].run_times.describe())


async def get_stats(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    per_job = request.query.get("per_job", "1") not in ("0", "false", "no")
    return json_response(200, state.stats(per_job=per_job))


async def post_reset_stats(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset_stats()
    return json_response(200, {"reset": True})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_sim/stats", get_stats)
    app.router.add_post("/_sim/reset-stats", post_reset_stats)
    app.router.add_post("/_sim/jobs", post_jobs)
    app.router.add_get("/_sim/jobs/{job_id}", get_job)
    app.router.add_post("/_sim/tokens", post_tokens)
    app.router.add_get("/_sim/faults", get_faults)
    app.router.add_post("/_sim/faults", post_faults)
    app.router.add_get("/_sim/queue", get_queue)
    app.router.add_post("/_sim/queue", post_queue)
    app.router.add_get("/_sim/run-times", get_run_times)
    app.router.add_post("/_sim/run-times", post_run_times)
