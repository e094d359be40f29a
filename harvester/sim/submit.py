"""Job submission: ``POST /api/v1/jobs/{type}/submit`` and the generic ``/jobs/submit``.

Validates the payload the way the documentation describes (400 with a ``{detail}`` string for the
documented messages, 422 with a FastAPI-style ``detail`` list for type and range errors), then
creates the job, or returns the job an identical payload created within 24 h (``from_cache``).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from harvester.sim.bodies import submit_body
from harvester.sim.jobs import KNOWN_TYPES, MAPS, SITE
from harvester.sim.state import Credential, SimState

DEFAULT_PRIORITY = {"spiderMapsEnrich": 5, "spiderVerify": 5}
SITE_MODES = ("contacts", "compendium", "leads", "full")
Result = tuple[int, dict[str, Any]]


def invalid(loc: list[str | int], msg: str, kind: str = "value_error") -> Result:
    return 422, {"detail": [{"type": kind, "loc": ["body", *loc], "msg": msg}]}


def _int_in(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _valid_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and "." in (parts.hostname or "")


def check_payload(job_type: str, payload: dict[str, Any]) -> Result | None:
    """An error answer for a bad payload, or None when it is acceptable."""
    if job_type == SITE:
        url = payload.get("url")
        if url is None or url == "":
            return 400, {"detail": "Missing required field: url"}
        if not isinstance(url, str) or not _valid_url(url):
            return 400, {"detail": "Invalid URL format. Please provide a valid HTTP/HTTPS URL."}
        if "mode" in payload and payload["mode"] not in SITE_MODES:
            return invalid(["payload", "mode"], "Input should be " + ", ".join(SITE_MODES), "enum")
        if "max_pages" in payload and not _int_in(payload["max_pages"], 1, 50):
            return invalid(["payload", "max_pages"], "Input should be between 1 and 50")
        if bool(payload.get("product_description")) != bool(payload.get("icp_description")):
            return invalid(["payload"], "product_description and icp_description must be given together")
    elif job_type == MAPS:
        query, url = payload.get("search_query"), payload.get("url")
        if not (isinstance(query, str) and query.strip()) and not (isinstance(url, str) and url):
            return 400, {"detail": "Missing required field: search_query"}
        if "max_results" in payload and not _int_in(payload["max_results"], 1, 100):
            return invalid(["payload", "max_results"], "Input should be between 1 and 100")
    elif job_type == "spiderVerify":
        emails = payload.get("emails")
        if payload.get("email") is None and not emails:
            return 400, {"detail": "Missing required field: email"}
        if emails is not None and (not isinstance(emails, list) or len(emails) > 100):
            return invalid(["payload", "emails"], "Input should be a list of at most 100 items")
    return None


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


async def handle(request: web.Request, state: SimState, cred: Credential, job_type: str | None) -> Result:
    body = await _json_object(request)
    if body is None:
        return 422, {
            "detail": [
                {
                    "type": "json_invalid",
                    "loc": ["body"],
                    "msg": "Input should be a valid JSON object",
                }
            ]
        }
    if job_type is None:
        # The generic endpoint: {job_type, url, ...} at the top level.
        job_type = body.get("job_type")
        if job_type not in (SITE, MAPS):
            return 400, {"detail": "Invalid job_type. Must be 'spiderSite' or 'spiderMaps'"}
        payload = {k: v for k, v in body.items() if k not in ("job_type", "priority")}
    else:
        if job_type not in KNOWN_TYPES:
            return 404, {"detail": "Not Found"}
        raw_payload = body.get("payload")
        if not isinstance(raw_payload, dict):
            return invalid(["payload"], "Field required", "missing")
        payload = raw_payload
    priority = body.get("priority", DEFAULT_PRIORITY.get(job_type, 0))
    if not _int_in(priority, 0, 10):
        return invalid(["priority"], "Input should be between 0 and 10")
    error = check_payload(job_type, payload)
    if error is not None:
        return error
    job, cached = state.submit(cred, job_type, payload, priority)
    now = state.clock.now()
    return 201, submit_body(state.clock, job, now, cached)
