"""What a stream event's ``data`` says: which job, of which type, at what API time.

Job events name the job as ``job_id`` (campaign events: ``jobId``) and, for ``job.queued``, its
type; a heartbeat carries ``timestamp``, job events ``started_at`` or ``created_at``. Anything
unreadable reads as absent: an event is a nudge, and a nudge that cannot be read is skipped.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from harvester.api import classify

FINISHED = {"job.completed": "completed", "job.failed": "failed"}
RUNNING = {"job.started": "processing", "job.queued": "queued"}


def parse_body(data: str) -> dict[str, Any]:
    """An event's ``data`` as a JSON object, parsed once for everything read from it; ``{}`` when
    it is not one."""
    try:
        body: Any = json.loads(data)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def job_fields(body: dict[str, Any]) -> tuple[UUID | None, str | None]:
    """The job id of a job event (``job_id``, or ``jobId`` as campaign events spell it) and its
    type when the event names one (``job.queued`` does)."""
    value = body.get("job_id", body.get("jobId"))
    kind = body.get("type", body.get("job_type"))
    try:
        job_id = UUID(str(value)) if value is not None else None
    except ValueError:
        job_id = None
    return job_id, kind if isinstance(kind, str) and kind else None


def event_time(body: dict[str, Any]) -> datetime | None:
    """The API time an event carries (a heartbeat's ``timestamp``, a job's ``started_at`` or
    ``created_at``), if any is readable."""
    for key in ("timestamp", "started_at", "created_at"):
        stamp = classify.parse_time(body.get(key))
        if stamp is not None:
            return stamp
    return None
