"""Values too long to be index keys are dropped or digested, so the rest of the body is stored.

Found by the hostile-body corpus: one 9 kB random email, phone, address, place_id, category or
host name made PostgreSQL refuse the whole body ("index row size exceeds maximum"), and a good
harvest ended ``rejected``.
"""

from __future__ import annotations

import random
import uuid

from harvester import normalize
from harvester.normalize import values as v


def noise(size: int) -> str:
    rng = random.Random(size)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(size))


def site(**data: object) -> normalize.Normalized:
    return normalize.normalize(
        {
            "job_id": str(uuid.uuid4()),
            "type": "spiderSite",
            "status": "completed",
            "data": {"url": "https://ok.example", **data},
        }
    )


def maps(*businesses: dict[str, object]) -> normalize.Normalized:
    return normalize.normalize(
        {
            "job_id": str(uuid.uuid4()),
            "type": "spiderMaps",
            "status": "completed",
            "data": {"businesses": list(businesses)},
        }
    )


def test_an_overlong_email_is_not_an_address() -> None:
    assert v.email("a" * 250 + "@x.com") is None
    assert site(emails=[noise(5000) + "@x.com", "ok@x.com"]).emails == ("ok@x.com",)


def test_overlong_phones_and_addresses_are_dropped_the_rest_kept() -> None:
    item = site(phones=["+1" + noise(5000), "+1 555 0100"], addresses=[noise(5000), "1 Main St"])
    assert [p.phone for p in item.phones] == ["+1 555 0100"]
    assert item.addresses == ("1 Main St",)


def test_multibyte_text_is_measured_in_bytes() -> None:
    assert v.fits_key("é" * 500)
    assert not v.fits_key("é" * 501)


def test_an_overlong_host_gives_no_domain() -> None:
    item = site(url=f"https://{noise(300)}.com/")
    assert item.site is not None and item.site.domain is None


def test_an_overlong_place_id_becomes_a_stable_digest() -> None:
    long_id = noise(5000)
    first = maps({"place_id": long_id, "name": "a"}).businesses[0].place_id
    again = maps({"place_id": long_id, "name": "b"}).businesses[0].place_id
    assert first == again and first.startswith("digest:") and len(first) < 100


def test_overlong_categories_are_dropped() -> None:
    row = maps({"place_id": "p", "categories": [noise(5000), "Cafe"]}).businesses[0]
    assert row.categories == ("Cafe",)
