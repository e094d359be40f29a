"""Generated result data: documented keys, every documented variant, determinism by seed."""

from __future__ import annotations

import json
from typing import Any

from harvester.sim.data_maps import maps_data, other_data
from harvester.sim.data_site import site_data
from harvester.sim.words import SOCIALS
from tests.support.paths import SEED

JOB_IDS = [f"00000000-0000-4000-8000-{i:012d}" for i in range(300)]
MAPS_EXTRAS = {"phone_e164", "phone_national", "phone_type", "phone_valid", "image_url"}


def seed_example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((SEED / name).read_text())
    return body


def sites(variants: bool = True) -> list[dict[str, Any]]:
    return [site_data(7, job_id, {}, variants) for job_id in JOB_IDS]


def test_site_data_has_exactly_the_seed_keys_unless_legacy() -> None:
    expected = set(seed_example("site-champ-200.json")["data"])
    for data in sites():
        if "contact_info" in data:
            continue
        assert set(data) == expected


def test_site_data_without_variants_is_always_canonical() -> None:
    expected = set(seed_example("site-minimal-200.json")["data"])
    for data in sites(variants=False):
        assert set(data) == expected
        assert all(isinstance(phone, dict) for phone in data["phones"])
        assert data["pain_points"] is None or isinstance(data["pain_points"], list)


def test_site_data_is_a_function_of_seed_and_job_id() -> None:
    assert site_data(7, JOB_IDS[3], {}, True) == site_data(7, JOB_IDS[3], {}, True)
    assert site_data(7, JOB_IDS[3], {}, True) != site_data(8, JOB_IDS[3], {}, True)
    assert maps_data(7, JOB_IDS[3], {}, True) == maps_data(7, JOB_IDS[3], {}, True)


def test_site_variants_all_appear() -> None:
    found: set[str] = set()
    for data in sites():
        if "contact_info" in data:
            found.add("legacy_contact_info")
            assert set(data["contact_info"]) == {"emails", "phones", "addresses", "social_media"}
            assert set(data["contact_info"]["social_media"]) == set(SOCIALS)
            continue
        for phone in data["phones"]:
            found.add("phone_" + type(phone).__name__)
            if isinstance(phone, dict):
                assert set(phone) == {
                    "raw",
                    "e164",
                    "national",
                    "international",
                    "country_code",
                    "type",
                    "valid",
                }
        pain = data["pain_points"]
        found.add("pain_" + type(pain).__name__)
        if isinstance(pain, dict):
            assert set(pain) == {"inferred_challenges", "recent_mentions"}
        if data["lead_scoring"] is not None:
            found.add("champ")
            assert set(data["lead_scoring"]["champ_analysis"]) == {
                "challenges",
                "authority",
                "money",
                "prioritization",
            }
        if data["company_vitals"] is None:
            found.add("null_ai")
        if data["team_members"]:
            found.add("team")
        emails = data["emails"]
        if len({e.strip().lower() for e in emails}) < len(emails):
            found.add("duplicate_emails")
        if any(e != e.strip() or e != e.lower() for e in emails):
            found.add("messy_emails")
        if data["markdown_compendium"] and len(data["markdown_compendium"]) > 20_000:
            found.add("big_compendium")
    assert found >= {
        "legacy_contact_info",
        "phone_str",
        "phone_dict",
        "pain_list",
        "pain_dict",
        "pain_NoneType",
        "champ",
        "null_ai",
        "team",
        "duplicate_emails",
        "messy_emails",
        "big_compendium",
    }


def test_site_socials_are_the_14_documented_platforms() -> None:
    assert len(SOCIALS) == 14
    data = site_data(1, JOB_IDS[0], {"url": "https://www.acme.io"}, False)
    assert all(key in data for key in SOCIALS)
    assert data["url"] == "https://www.acme.io"


def test_maps_business_keys_match_the_seed_plus_documented_extras() -> None:
    expected = set(seed_example("maps-200.json")["data"]["businesses"][0])
    meta_expected = set(seed_example("maps-200.json")["data"]["metadata"])
    for job_id in JOB_IDS[:60]:
        data = maps_data(3, job_id, {}, True)
        assert set(data) == {"query", "results_count", "businesses", "metadata"}
        assert data["results_count"] == len(data["businesses"])
        assert set(data["metadata"]) - {"post_processing"} == meta_expected
        for business in data["businesses"]:
            keys = set(business)
            assert expected - {"coordinates"} <= keys <= expected | MAPS_EXTRAS


def test_maps_variants_and_shared_places() -> None:
    seen: dict[str, int] = {}
    hours_kinds: set[str] = set()
    missing_coordinates = 0
    for job_id in JOB_IDS[:150]:
        for business in maps_data(3, job_id, {}, True)["businesses"]:
            seen[business["place_id"]] = seen.get(business["place_id"], 0) + 1
            hours_kinds.add(type(business["working_hours"]).__name__)
            missing_coordinates += "coordinates" not in business
    assert {"dict", "str"} <= hours_kinds
    assert missing_coordinates > 0
    assert sum(1 for n in seen.values() if n > 1) > 50  # places recur across searches


def test_a_shared_place_has_the_same_details_in_every_search() -> None:
    by_place: dict[str, dict[str, Any]] = {}
    for job_id in JOB_IDS[:100]:
        for business in maps_data(3, job_id, {"validate_phones": False, "store_images": False}, True)[
            "businesses"
        ]:
            first = by_place.setdefault(business["place_id"], business)
            assert first == business


def test_maps_respects_the_payload() -> None:
    data = maps_data(1, JOB_IDS[1], {"search_query": "vets in Oslo", "max_results": 5}, True)
    assert data["query"] == "vets in Oslo"
    assert data["results_count"] <= 5
    assert data["metadata"]["max_results"] == 5


def test_verify_data_is_a_bulk_envelope() -> None:
    data = other_data(1, JOB_IDS[0], "spiderVerify", {"email": "a@b.com"})
    assert set(data) == {"total", "summary", "billable_count", "results", "metadata"}
    assert data["results"][0]["email"] == "a@b.com"
