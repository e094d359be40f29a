"""Response bodies in the documented shapes, built from a job and the clock.

Every builder returns plain dicts with exactly the keys of the documentation's examples (see
``tests/fixtures/seed`` and ``tests/fixtures/spideriq``). Job data is generated on demand and kept
in a small LRU cache, because a compendium is tens of KB and the same job is often fetched twice.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from harvester.sim.clock import Clock, iso_naive, iso_z
from harvester.sim.data_maps import maps_data, other_data
from harvester.sim.data_site import site_data
from harvester.sim.jobs import MAPS, SITE, Job

NOT_FOUND = {"detail": "Job not found"}
MSG_PROCESSING = "Job is still being processed. Please poll again in a few seconds."
MSG_QUEUED = "Job is queued and will be processed shortly. Please poll again in a few seconds."


@lru_cache(maxsize=512)
def _data_json(seed: int, job_id: str, job_type: str, payload: str, variants: bool) -> str:
    parsed: dict[str, Any] = json.loads(payload)
    if job_type == SITE:
        data = site_data(seed, job_id, parsed, variants)
    elif job_type == MAPS:
        data = maps_data(seed, job_id, parsed, variants)
    else:
        data = other_data(seed, job_id, job_type, parsed)
    return json.dumps(data, ensure_ascii=False)


def job_data(seed: int, job: Job, variants: bool) -> dict[str, Any]:
    """The ``data`` object of a completed job: a pure function of (seed, job_id, type, payload)."""
    payload = json.dumps(job.payload, sort_keys=True)
    result: dict[str, Any] = json.loads(_data_json(seed, job.job_id, job.type, payload, variants))
    return result


def stamp(clock: Clock, job: Job, sim_t: float) -> str:
    wall = clock.wall(sim_t)
    return iso_naive(wall) if job.naive_timestamps else iso_z(wall)


def results_body(clock: Clock, job: Job, now: float, seed: int, variants: bool) -> tuple[int, dict[str, Any]]:
    """HTTP status and body of ``GET /jobs/{id}/results`` for a job at ``now``."""
    status = job.status_at(now)
    if status in ("queued", "processing"):
        shown = "running" if status == "processing" and job.running_label else status
        return 202, {
            "success": False,
            "job_id": job.job_id,
            "type": job.type,
            "status": shown,
            "processing_time_seconds": None,
            "worker_id": job.worker_id if status == "processing" else None,
            "completed_at": None,
            "message": MSG_PROCESSING if status == "processing" else MSG_QUEUED,
            "data": None,
            "error_message": None,
        }
    envelope: dict[str, Any] = {
        "success": status == "completed",
        "job_id": job.job_id,
        "type": job.type,
        "status": status,
        "processing_time_seconds": job.processing_time(),
        "worker_id": job.worker_id if job.finished_at() > job.start_at else None,
        "completed_at": stamp(clock, job, job.finished_at()),
        "message": None,
        "data": None,
        "error_message": None,
    }
    if status == "completed":
        envelope["data"] = job_data(seed, job, variants)
        return 200, envelope
    envelope["error_message"] = job.error_message if status == "failed" else "Job was cancelled by user"
    return 410, envelope


def status_body(clock: Clock, job: Job, now: float) -> dict[str, Any]:
    status = job.status_at(now)
    return {
        "success": True,
        "job_id": job.job_id,
        "type": job.type,
        "status": status,
        "created_at": stamp(clock, job, job.created_at),
        "updated_at": stamp(clock, job, job.updated_at(now)),
        "worker_id": None if status == "queued" or job.finished_at() <= job.start_at else job.worker_id,
    }


def list_row(clock: Clock, job: Job, now: float) -> dict[str, Any]:
    row = status_body(clock, job, now)
    url = job.payload.get("url") if job.type != MAPS else None
    return {
        "job_id": row["job_id"],
        "type": row["type"],
        "status": row["status"],
        "url": url if isinstance(url, str) else None,
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "worker_id": row["worker_id"],
    }


def submit_body(clock: Clock, job: Job, now: float, from_cache: bool) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "type": job.type,
        "status": job.status_at(now) if from_cache else "queued",
        "created_at": iso_z(clock.wall(job.created_at)),
        "from_cache": from_cache,
        "message": "Job retrieved from cache (identical payload within 24h)"
        if from_cache
        else "Job submitted successfully",
    }


def cancel_body(job: Job) -> dict[str, Any]:
    return {
        "success": True,
        "job_id": job.job_id,
        "status": "cancelled",
        "message": "Job cancelled successfully",
    }


def health_body(clock: Clock, now: float) -> dict[str, Any]:
    return {
        "status": "healthy",
        "timestamp": iso_z(clock.wall(now)),
        "version": "1.0.0",
        "services": {
            "database": "up",
            "redis": "up",
            "rabbitmq": "up",
            "workers": {"spider_site": 4, "spider_maps": 2, "total": 6, "available": True},
        },
    }


def queue_stats_body(clock: Clock, now: float, jobs: list[Job]) -> dict[str, Any]:
    queues = {key: {"queued": 0, "processing": 0, "total": 0} for key in ("spider_site", "spider_maps")}
    done_hour = done_day = 0
    times: list[float] = []
    for job in jobs:
        key = "spider_site" if job.type == SITE else "spider_maps" if job.type == MAPS else None
        status = job.status_at(now)
        if key and status in ("queued", "processing"):
            queues[key][status] += 1
            queues[key]["total"] += 1
        if status in ("completed", "failed", "cancelled"):
            age = now - job.finished_at()
            done_hour += age <= 3600
            done_day += age <= 86400
            pt = job.processing_time()
            if pt is not None:
                times.append(pt)
    workers = {"spider_site": 4, "spider_maps": 2}
    return {
        "timestamp": iso_z(clock.wall(now)),
        "queues": queues,
        "workers": {
            key: {
                "active": min(total, queues[key]["processing"]),
                "idle": max(0, total - queues[key]["processing"]),
                "total": total,
            }
            for key, total in workers.items()
        },
        "processing": {
            "jobs_last_hour": done_hour,
            "jobs_last_24h": done_day,
            "avg_processing_time": round(sum(times) / len(times), 1) if times else 0.0,
            "current_rate": round(done_hour / 60.0, 1),
        },
    }
