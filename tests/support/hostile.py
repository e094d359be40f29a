"""A corpus of hostile and malformed result bodies, each a function of the job id it answers for.

Hand-written cases cover what a broken or malicious API could send: wrong types in every field,
huge strings, deep nesting, NUL characters, lone surrogates (as ``\\ud800`` escapes), SQL in every
string, unexpected keys, empty objects, duplicate keys in child lists, bytes that are not UTF-8,
numbers out of every range. ``body_strategy`` generates more with hypothesis. Every body keeps
``"status": "completed"`` unless the case is about the job id or the body's shape, so a 200 always
means "finished" to the client and the job must end harvested or rejected.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from hypothesis import strategies as st

SEED = Path(__file__).resolve().parents[1] / "fixtures" / "seed"
SQL = "'); DROP TABLE harvester.jobs; --"
Case = Callable[[UUID], bytes]


def template(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((SEED / name).read_text())
    return body


SITE = template("site-champ-200.json")
MAPS = template("maps-200.json")


def dumps(body: Any) -> bytes:
    return json.dumps(body).encode()


def with_id(base: dict[str, Any], job_id: UUID, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(base))
    body["job_id"] = str(job_id)
    body.update(changes)
    return body


def site(job_id: UUID, **data: Any) -> bytes:
    body = with_id(SITE, job_id)
    body["data"].update(data)
    return dumps(body)


def maps(job_id: UUID, **data: Any) -> bytes:
    body = with_id(MAPS, job_id)
    body["data"].update(data)
    return dumps(body)


def every_string(value: Any, make: Callable[[str], str]) -> Any:
    """The same JSON with every string value rewritten (job_id, type and status left alone)."""
    if isinstance(value, dict):
        return {
            k: v if k in ("job_id", "type", "status") else every_string(v, make) for k, v in value.items()
        }
    if isinstance(value, list):
        return [every_string(v, make) for v in value]
    if isinstance(value, str):
        return make(value)
    return value


def wrong_types(value: Any, replacement: Any) -> Any:
    """Every leaf (other than job_id and status) replaced by a value of another type."""
    if isinstance(value, dict):
        return {k: v if k in ("job_id", "status") else wrong_types(v, replacement) for k, v in value.items()}
    if isinstance(value, list):
        return [wrong_types(v, replacement) for v in value]
    return replacement


def nested(depth: int, leaf: Any = 1) -> Any:
    value: Any = leaf
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


def noise(size: int, seed: int = 1) -> str:
    """Text that does not compress: an index entry holding it really is ``size`` bytes."""
    import random

    rng = random.Random(seed)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(size))


def place(place_id: str, name: str) -> dict[str, Any]:
    return {"name": name, "place_id": place_id, "rating": 4.0, "reviews_count": 3}


def _hand_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {
        "empty body": lambda j: b"",
        "whitespace": lambda j: b"  \n\t ",
        "json null": lambda j: b"null",
        "json array": lambda j: dumps([{"job_id": str(j)}]),
        "json string": lambda j: dumps(str(j)),
        "json number": lambda j: b"42",
        "empty object": lambda j: b"{}",
        "only job_id": lambda j: dumps({"job_id": str(j)}),
        "job_id wrong job": lambda j: dumps(with_id(SITE, UUID(int=j.int ^ 1))),
        "job_id number": lambda j: dumps({**with_id(SITE, j), "job_id": 12345}),
        "job_id sql": lambda j: dumps({**with_id(SITE, j), "job_id": SQL}),
        "job_id with NUL": lambda j: dumps({**with_id(SITE, j), "job_id": str(j) + "\x00"}),
        "truncated json": lambda j: dumps(with_id(SITE, j))[:-40],
        "not utf-8": lambda j: dumps(with_id(SITE, j)).replace(b"TechStart", b"Tech\xff\xfeStart"),
        "latin-1 text": lambda j: dumps(with_id(SITE, j)).replace(b"Palo Alto", b"Caf\xe9 Alto"),
        "utf-8 bom": lambda j: b"\xef\xbb\xbf" + dumps(with_id(SITE, j)),
        "utf-16": lambda j: json.dumps(with_id(SITE, j)).encode("utf-16"),
        "NaN and Infinity": lambda j: dumps(with_id(MAPS, j)).replace(
            b'"rating": 4.6', b'"rating": NaN, "x": Infinity, "y": -Infinity'
        ),
        "NUL everywhere": lambda j: dumps(every_string(with_id(SITE, j), lambda s: s + "\x00")),
        "NUL in keys": lambda j: dumps({**with_id(SITE, j), "k\x00ey": "v\x00"}),
        "lone surrogates": lambda j: dumps(with_id(SITE, j)).replace(
            b"TechStart", b"\\ud800Tech\\udfffStart"
        ),
        "surrogate in key": lambda j: b"".join((dumps(with_id(SITE, j))[:-1], b', "\\udc00": "\\ud834"}')),
        "surrogate pair split": lambda j: site(j, emails=["\\ud83d@x.com"]).replace(b"\\\\ud83d", b"\\ud83d"),
        "sql in every string": lambda j: dumps(every_string(with_id(SITE, j), lambda s: s + SQL)),
        "sql in maps strings": lambda j: dumps(every_string(with_id(MAPS, j), lambda s: SQL)),
        "sql as place_id": lambda j: maps(j, businesses=[place(SQL, "x"), place(SQL + "2", "y")]),
        "wrong types: numbers": lambda j: dumps(wrong_types(with_id(SITE, j), 7)),
        "wrong types: objects": lambda j: dumps(wrong_types(with_id(SITE, j), {"a": [1]})),
        "wrong types: lists": lambda j: dumps(wrong_types(with_id(MAPS, j), [None, True])),
        "wrong types: booleans": lambda j: dumps(wrong_types(with_id(MAPS, j), False)),
        "wrong types: null": lambda j: dumps(wrong_types(with_id(SITE, j), None)),
        "data is a string": lambda j: dumps(with_id(SITE, j, data="oops")),
        "data is a list": lambda j: dumps(with_id(MAPS, j, data=[1, 2, 3])),
        "data empty": lambda j: dumps(with_id(SITE, j, data={})),
        "type is an object": lambda j: dumps(with_id(SITE, j, type={"spiderSite": 1})),
        "unknown type": lambda j: dumps(with_id(SITE, j, type="spider" + "X" * 300)),
        "unexpected keys": lambda j: dumps(
            {**with_id(SITE, j), **{f"extra_{i}": {"v": i} for i in range(200)}}
        ),
        "huge string 5 MB": lambda j: site(j, markdown_compendium="A" * 5_000_000),
        "huge email": lambda j: site(j, emails=["a" * 20_000 + "@example.com"]),
        "huge place_id": lambda j: maps(j, businesses=[place("p" * 10_000, "big")]),
        "huge social url": lambda j: site(j, linkedin="https://linkedin.com/" + "x" * 10_000),
        "huge random email": lambda j: site(j, emails=[noise(9000) + "@example.com"]),
        "huge random phone": lambda j: site(j, phones=["+1" + noise(9000)]),
        "huge random address": lambda j: site(j, addresses=[noise(9000)]),
        "huge random place_id": lambda j: maps(j, businesses=[place(noise(9000), "big")]),
        "huge random domain": lambda j: site(j, url=f"https://{noise(9000)}.com/"),
        "huge random category": lambda j: maps(
            j, businesses=[{**place("c", "c"), "categories": [noise(9000)]}]
        ),
        "huge random key": lambda j: dumps({**with_id(SITE, j), noise(9000): 1}),
        "deep nesting 199": lambda j: site(j, compendium=nested(197)),
        "site data under maps type": lambda j: dumps({**with_id(SITE, j), "type": "spiderMaps"}),
        "many emails": lambda j: site(j, emails=[f"u{i}@example.com" for i in range(20_000)]),
        "deep nesting 150": lambda j: site(j, compendium=nested(150)),
        "deep nesting 10k": lambda j: site(j, compendium="@@").replace(
            b'"@@"', b"[" * 10_000 + b"]" * 10_000
        ),
        "deep nesting 100k": lambda j: site(j, compendium="@@").replace(
            b'"@@"', b"[" * 100_000 + b"]" * 100_000
        ),
        "duplicate place_ids": lambda j: maps(
            j, businesses=[place("dup", "a"), place("dup", "b"), place("dup", "c")]
        ),
        "duplicate emails": lambda j: site(j, emails=["A@x.com", " a@x.com ", "a@X.COM"]),
        "duplicate phones": lambda j: site(
            j, phones=["+1 555 0100", "+1 555 0100", {"number": "+1 555 0100"}]
        ),
        "duplicate addresses": lambda j: site(j, addresses=["1 Main St", "1 Main St"]),
        "duplicate team positions": lambda j: site(j, team_members=[{"name": "a"}, {"name": "a"}]),
        "duplicate json keys": lambda j: b"".join(
            (dumps(with_id(SITE, j))[:-1], b', "job_id": "', str(j).encode(), b'", "type": "spiderMaps"}')
        ),
        "big integers": lambda j: maps(
            j,
            results_count=10**30,
            businesses=[{**place("big", "b"), "reviews_count": 2**63, "rating": 10**400}],
        ),
        "int literal 5000 digits": lambda j: dumps(with_id(SITE, j)).replace(
            b'"processing_time_seconds": ', b'"processing_time_seconds": ' + b"9" * 5000 + b', "_": '
        ),
        "float overflow": lambda j: dumps(with_id(MAPS, j)).replace(b"42.3647", b"1e999"),
        "negative and tiny numbers": lambda j: maps(
            j,
            results_count=-(2**31) - 1,
            businesses=[
                {
                    **place("t", "t"),
                    "rating": -1e-320,
                    "coordinates": {"latitude": 1e308, "longitude": -1e308},
                }
            ],
        ),
        "timestamps out of range": lambda j: dumps(with_id(SITE, j, completed_at="0000-00-00T99:99")),
        "timestamp year 9999 offset": lambda j: dumps(
            with_id(SITE, j, completed_at="9999-12-31T23:59:59-14:00")
        ),
        "timestamp number": lambda j: dumps(with_id(SITE, j, completed_at=1761559200)),
        "control characters": lambda j: dumps(
            every_string(with_id(SITE, j), lambda s: "\x01\x1b[31m" + s + "\x7f")
        ),
        "rtl and emoji": lambda j: dumps(
            every_string(with_id(MAPS, j), lambda s: "\u202e" + s + "\U0001f4a5")
        ),
        "socials wrong platform keys": lambda j: site(j, **{"myspace": "x", "LinkedIn": ["a"]}),
        "team member fields wrong": lambda j: site(j, team_members=[1, "x", None, {"name": {}}]),
        "businesses not a list": lambda j: maps(j, businesses={"a": place("p", "n")}),
        "business without any key": lambda j: maps(j, businesses=[{}, {"name": None}]),
        "categories wrong": lambda j: maps(
            j, businesses=[{**place("c", "c"), "categories": [1, {"a": 2}, None]}]
        ),
        "working hours weird": lambda j: maps(
            j, businesses=[{**place("w", "w"), "working_hours": [[["x"]]]}]
        ),
    }
    return cases


HAND_CASES = _hand_cases()

# Unusable as a whole: not UTF-8 JSON, not an object, no job id or someone else's, too deep.
# Everything else is stored, bad fields read as absent. The oversized keys ("huge random ...")
# were rejected whole by PostgreSQL until normalize learned to drop or digest them.
REJECTED = frozenset(
    {
        "empty body",
        "whitespace",
        "json null",
        "json array",
        "json string",
        "json number",
        "empty object",
        "job_id wrong job",
        "job_id number",
        "job_id sql",
        "truncated json",
        "not utf-8",
        "latin-1 text",
        "utf-16",
        "deep nesting 10k",
        "deep nesting 100k",
        "int literal 5000 digits",
    }
)


# ------------------------------------------------------------------ generated cases


def hostile_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=40),
        st.sampled_from(
            [
                SQL,
                "\x00",
                "\ud800",
                "\udfff",
                "' OR 1=1 --",
                "$1",
                "\\",
                "%s",
                "\u0000\u0000",
                "${jndi:x}",
                "a" * 3000,
                "\ufeff",
                "NaN",
            ]
        ),
    )


def json_values() -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        hostile_text(),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(hostile_text(), inner, max_size=4)
        ),
        max_leaves=12,
    )


SITE_KEYS = [*SITE["data"], "contact_info", "logo", "custom_analysis"]
MAPS_KEYS = ["query", "results_count", "metadata", "businesses"]
BUSINESS_KEYS = [*MAPS["data"]["businesses"][0], "business_place_id", "category"]


@st.composite
def body_strategy(draw: st.DrawFn) -> Callable[[UUID], bytes]:
    """A site or maps body with random fields replaced by random hostile JSON values."""
    kind = draw(st.sampled_from(["site", "maps", "other"]))
    base = SITE if kind == "site" else MAPS
    data = json.loads(json.dumps(base["data"]))
    for key in draw(st.lists(st.sampled_from(SITE_KEYS if kind == "site" else MAPS_KEYS), max_size=6)):
        data[key] = draw(json_values())
    if kind == "maps" and draw(st.booleans()):
        data["businesses"] = [
            {k: draw(json_values()) for k in draw(st.lists(st.sampled_from(BUSINESS_KEYS), max_size=5))}
            for _ in range(draw(st.integers(0, 3)))
        ]
    top = {
        k: draw(json_values())
        for k in draw(
            st.lists(
                st.sampled_from(
                    [
                        "success",
                        "processing_time_seconds",
                        "worker_id",
                        "completed_at",
                        "message",
                        "error_message",
                    ]
                ),
                max_size=3,
            )
        )
    }
    job_type = "spiderOther" if kind == "other" else base["type"]

    def build(job_id: UUID) -> bytes:
        body = {**with_id(base, job_id), **top, "type": job_type, "data": data}
        return json.dumps(body).encode()

    return build


def generated_cases(count: int, seed: int = 5) -> dict[str, Case]:
    """A fixed sample of generated bodies (for the daemon test, which needs them up front)."""
    import random

    rng = random.Random(seed)
    out: dict[str, Case] = {}
    for n in range(count):
        out[f"generated {n}"] = _draw_plain(rng)
    return out


def _draw_plain(rng: Any) -> Case:
    """A generated case without hypothesis' engine: random fields from the hostile pool."""
    pool: list[Any] = [
        None,
        True,
        0,
        -1,
        2**40,
        -(2**70),
        1.5e308,
        -0.0,
        SQL,
        "\x00",
        "\ud800",
        "",
        " ",
        "a" * 3000,
        [],
        {},
        [SQL, {"x": "\udfff"}],
        {"\x00": [None]},
        {"k": {"k": {"k": [1, "2", None]}}},
    ]
    kind = rng.choice(["site", "maps"])
    base = SITE if kind == "site" else MAPS
    data = json.loads(json.dumps(base["data"]))
    for key in rng.sample(SITE_KEYS if kind == "site" else MAPS_KEYS, k=3):
        data[key] = rng.choice(pool)
    if kind == "maps":
        data["businesses"] = [
            {k: rng.choice(pool) for k in rng.sample(BUSINESS_KEYS, k=4)}
            | {"place_id": rng.choice(["p1", "p2", SQL])}
            for _ in range(3)
        ]

    def build(job_id: UUID) -> bytes:
        return json.dumps({**with_id(base, job_id), "data": data}).encode()

    return build
