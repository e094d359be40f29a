"""Generated ``data`` objects for spiderMaps results and for the other job types.

Maps searches draw their businesses from a fixed pool per (category, city), so the same place
appears in many searches with the same ``place_id`` and the same details: each business is a pure
function of (seed, place_id). Variants covered: working hours as a per-day dict or a summary
string, missing coordinates, empty addresses, Google's 4.0/1024 placeholder rating, and the
phone-validation and image fields. Other job types get small bodies in their documented shapes.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from harvester.sim import words as w
from harvester.sim.data_site import company

POOL_SIZE = 60


def place_id(seed: int, category: int, city: int, index: int) -> str:
    digest = hashlib.sha256(f"{seed}:{category}:{city}:{index}".encode()).hexdigest()
    return f"0x{digest[:16]}:0x{digest[16:32]}"


def _hours(rng: random.Random, variants: bool) -> dict[str, str] | str | None:
    if variants and rng.random() < 0.2:
        return rng.choice(
            (
                "Open 24 hours",
                "Closed ⋅ Opens 9 AM Mon",
                "Open ⋅ Closes 10 PM",
                "Temporarily closed",
            )
        )
    if rng.random() < 0.05:
        return None
    open_h, close_h = rng.randint(6, 11), rng.randint(5, 11)
    hours = {day: f"{open_h}:00 AM-{close_h}:00 PM" for day in w.DAYS}
    if rng.random() < 0.5:
        hours["Sunday"] = "Closed"
    return hours


def business(
    seed: int, pid: str, category: int, city: int, validate: bool, images: bool, variants: bool
) -> dict[str, Any]:
    rng = random.Random(f"{seed}:{pid}:place")
    _, cat_labels = w.CATEGORIES[category]
    town, region, _, prefix, lat, lon = w.CITIES[city]
    word = rng.choice(w.BUSINESS_WORDS)
    tail = rng.choice(("", "Co.", "House", "Bar", "Place"))
    name = f"{word} {rng.choice(cat_labels).split()[0]} {tail}".strip()
    _, domain = company(rng)
    placeholder = variants and rng.random() < 0.04
    local = f"{rng.randint(200, 999)}-{rng.randint(1000, 9999)}"
    phone = f"{prefix}-{local}" if rng.random() < 0.9 else None
    row: dict[str, Any] = {
        "name": name,
        "place_id": pid,
        "rating": 4.0 if placeholder else round(rng.uniform(2.8, 5.0), 1),
        "reviews_count": 1024 if placeholder else rng.randint(0, 2500),
        "address": ""
        if variants and rng.random() < 0.05
        else f"{rng.randint(1, 300)} {rng.choice(w.STREETS)}, {town}, {region}",
        "phone": phone,
        "website": f"https://www.{domain}/" if rng.random() < 0.75 else None,
        "categories": rng.sample(cat_labels, rng.randint(1, len(cat_labels))),
        "coordinates": {
            "latitude": round(lat + rng.uniform(-0.05, 0.05), 6),
            "longitude": round(lon + rng.uniform(-0.05, 0.05), 6),
        },
        "link": f"https://www.google.com/maps/place/{name.replace(' ', '+')}/data=!4m2!3m1!1s{pid}",
        "business_status": rng.choice(("OPERATIONAL",) * 12 + ("CLOSED_TEMPORARILY", "CLOSED_PERMANENTLY")),
        "price_range": rng.choice(("$", "$$", "$$$", "$$$$", None)),
        "working_hours": _hours(rng, variants),
    }
    if variants and rng.random() < 0.08:
        del row["coordinates"]
    if validate and phone is not None:
        valid = rng.random() < 0.9
        digits = "".join(ch for ch in phone if ch.isdigit())
        row.update(
            phone_e164=f"+{digits}" if valid else None,
            phone_national=local if valid else None,
            phone_type=rng.choice(("FIXED_LINE", "MOBILE")) if valid else "UNKNOWN",
            phone_valid=valid,
        )
    if images:
        row["image_url"] = f"https://media.cdn.spideriq.ai/places/{pid.replace(':', '_')}.jpg"
    return row


def maps_data(seed: int, job_id: str, payload: dict[str, Any], variants: bool) -> dict[str, Any]:
    """The ``data`` object of a completed spiderMaps job."""
    rng = random.Random(f"{seed}:{job_id}:maps")
    category, city = rng.randrange(len(w.CATEGORIES)), rng.randrange(len(w.CITIES))
    query = str(payload.get("search_query") or f"{w.CATEGORIES[category][0]} in {w.CITIES[city][0]}")
    max_results = int(payload.get("max_results") or 20)
    validate = bool(payload.get("validate_phones", rng.random() < 0.5))
    images = bool(payload.get("store_images", rng.random() < 0.5))
    count = min(max_results, rng.randint(max(1, max_results // 2), max_results))
    if rng.random() < 0.03:
        count = 0
    start = rng.randrange(POOL_SIZE)
    pids = [place_id(seed, category, city, (start + i) % POOL_SIZE) for i in range(count)]
    businesses = [business(seed, pid, category, city, validate, images, variants) for pid in pids]
    metadata: dict[str, Any] = {
        "max_results": max_results,
        "extract_reviews": bool(payload.get("extract_reviews", False)),
        "extract_photos": bool(payload.get("extract_photos", False)),
        "language": str(payload.get("lang") or "en"),
    }
    if validate:
        valid = sum(1 for b in businesses if b.get("phone_valid"))
        checked = sum(1 for b in businesses if "phone_valid" in b)
        metadata["post_processing"] = {
            "phone_validation": {"total": checked, "valid": valid, "invalid": checked - valid},
            "image_upload": {
                "total_images": count if images else 0,
                "uploaded": count if images else 0,
                "failed": 0,
            },
        }
    return {
        "query": query,
        "results_count": len(businesses),
        "businesses": businesses,
        "metadata": metadata,
    }


def other_data(seed: int, job_id: str, job_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Small bodies for job types beyond site and maps (stored raw by the harvester)."""
    rng = random.Random(f"{seed}:{job_id}:other")
    if job_type == "spiderVerify":
        emails = payload.get("emails") or [payload.get("email") or f"info@{company(rng)[1]}"]
        results = []
        summary = {"valid": 0, "invalid": 0, "risky": 0, "unknown": 0, "fuzziq_skipped": 0}
        for email in emails:
            status = rng.choice(("valid", "valid", "invalid", "risky", "unknown"))
            summary[status] += 1
            results.append(
                {
                    "email": email,
                    "status": status,
                    "sub_status": None,
                    "quality": rng.choice(("good", "ok", "bad")),
                    "score": rng.randint(0, 100),
                    "flags": {
                        "disposable": False,
                        "role": email.startswith("info"),
                        "free": False,
                        "catch_all": rng.random() < 0.2,
                        "mx_found": True,
                        "smtp_ok": status == "valid",
                        "gravatar": False,
                        "dnsbl_listed": False,
                        "typo": False,
                    },
                    "domain": {
                        "name": email.split("@")[-1],
                        "mx_found": True,
                        "mx_records": ["mx1.mailhost.net"],
                        "smtp_provider": "google",
                    },
                }
            )
        return {
            "total": len(results),
            "summary": summary,
            "billable_count": len(results),
            "results": results,
            "metadata": {
                "total_time_seconds": round(rng.uniform(3, 10), 2),
                "rate_limit_delay_seconds": 0.0,
            },
        }
    return {
        "status": rng.choice(("recovered", "skipped")) if job_type == "spiderSocial" else "ok",
        "input": payload,
        "items": [{"id": i, "value": rng.choice(w.SENTENCES)} for i in range(rng.randint(0, 5))],
    }
