"""Generated ``data`` objects for spiderSite results.

The body is a pure function of (seed, job_id, payload): the same seed and job give byte-identical
data in every run. It exercises the documented variants: phones as strings and as objects, pain
points as a list and as an object, AI sections null or filled, CHAMP lead scoring, the 14 flat
social fields, emails with mixed case, whitespace and duplicates, compendiums of tens of KB, and
now and then the pre-2.7.1 layout with contacts nested under ``contact_info``.
"""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import urlsplit

from harvester.sim import words as w


def company(rng: random.Random) -> tuple[str, str]:
    """A company name and its domain."""
    stem = "".join(rng.choice(w.SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
    name = f"{stem} {rng.choice(w.SUFFIXES)}"
    return name, f"{stem.lower()}.{rng.choice(w.TLDS)}"


def _phone(rng: random.Random, as_object: bool) -> str | dict[str, Any]:
    city = rng.choice(w.CITIES)
    prefix, country = city[3], city[2]
    local = f"{rng.randint(200, 999)}-{rng.randint(1000, 9999)}"
    raw = f"{prefix}-{local}" if rng.random() < 0.5 else f"({prefix[1:]}) {local}"
    if not as_object:
        return raw
    digits = "".join(ch for ch in f"{prefix}{local}" if ch.isdigit())
    valid = rng.random() < 0.9
    return {
        "raw": raw,
        "e164": f"+{digits}" if valid else None,
        "national": local if valid else None,
        "international": f"{prefix} {local}" if valid else None,
        "country_code": country,
        "type": rng.choice(("FIXED_LINE", "MOBILE", "FIXED_LINE_OR_MOBILE", "TOLL_FREE")),
        "valid": valid,
    }


def _emails(rng: random.Random, domain: str, people: list[tuple[str, str]]) -> list[str]:
    locals_ = ["contact", "sales", "info", "hello", "support", "press"]
    picked = rng.sample(locals_, rng.randint(0, 4))
    picked += [first.lower() for first, _ in people[: rng.randint(0, len(people))]]
    emails = [f"{local}@{domain}" for local in picked]
    if emails and rng.random() < 0.4:
        # Real crawls return the same address in other cases and padded with spaces.
        dup = rng.choice(emails)
        emails.append(rng.choice((dup.upper(), f"  {dup} ", dup.capitalize(), dup)))
    if rng.random() < 0.15:
        emails.append(f"careers@{domain}".replace("careers", "Careers"))
    return emails


def _compendium(rng: random.Random, name: str, target_chars: int) -> str:
    parts = [f"# {name}\n\n{rng.choice(w.SENTENCES)}\n"]
    size = len(parts[0])
    while size < target_chars:
        section = (
            f"\n## {rng.choice(w.SECTIONS)}\n\n"
            + " ".join(rng.choice(w.SENTENCES) for _ in range(rng.randint(4, 12)))
            + "\n"
        )
        if rng.random() < 0.3:
            section += "".join(f"- {rng.choice(w.SERVICES)}\n" for _ in range(rng.randint(2, 6)))
        parts.append(section)
        size += len(section)
    return "".join(parts)


def _pain_points(rng: random.Random, variants: bool) -> list[str] | dict[str, Any]:
    challenges = rng.sample(w.CHALLENGES, rng.randint(1, 4))
    if variants and rng.random() < 0.4:
        return {
            "inferred_challenges": challenges,
            "recent_mentions": rng.sample(w.MENTIONS, rng.randint(0, 3)),
        }
    return challenges


def site_data(seed: int, job_id: str, payload: dict[str, Any], variants: bool) -> dict[str, Any]:
    """The ``data`` object of a completed spiderSite job."""
    rng = random.Random(f"{seed}:{job_id}:site")
    name, domain = company(rng)
    url = str(payload.get("url") or f"https://{domain}")
    host = urlsplit(url).hostname or domain
    domain = host.removeprefix("www.")
    handle = domain.split(".")[0]
    mode = str(payload.get("mode") or rng.choice(("contacts", "compendium", "leads", "full")))
    ai = mode in ("leads", "full") or rng.random() < 0.2
    champ = ai and (bool(payload.get("icp_description")) or rng.random() < 0.5)
    people = [(rng.choice(w.FIRST), rng.choice(w.LAST)) for _ in range(rng.randint(0, 6))]
    city = rng.choice(w.CITIES)
    phones_as_objects = not variants or rng.random() < 0.7
    phones = [_phone(rng, phones_as_objects) for _ in range(rng.randint(0, 3))]
    addresses = [
        f"{rng.randint(1, 400)} {rng.choice(w.STREETS)}, {city[0]}, {city[1]}"
        for _ in range(rng.randint(0, 2))
    ]
    emails = _emails(rng, domain, people)
    socials = {
        key: (w.SOCIAL_URLS[key].format(h=handle) if rng.random() < 0.35 else None) for key in w.SOCIALS
    }
    has_compendium = mode != "contacts" or rng.random() < 0.5
    markdown = _compendium(rng, name, rng.randint(8_000, 60_000)) if has_compendium else None
    team = (
        [
            {
                "name": f"{first} {last}",
                "title": rng.choice(w.TITLES),
                "email": f"{first.lower()}@{domain}" if rng.random() < 0.6 else None,
                "linkedin": f"https://linkedin.com/in/{first.lower()}{last.lower()}"
                if rng.random() < 0.7
                else None,
            }
            for first, last in people
        ]
        if ai
        else []
    )
    challenges = rng.sample(w.CHALLENGES, 2)
    industry = rng.choice(w.INDUSTRIES)
    decision = team[0] if team else None
    pages = rng.randint(1, {"contacts": 5, "compendium": 10, "leads": 50, "full": 100}[mode])
    crawl = rng.choice(("success",) * 6 + ("partial",) * 3 + ("failed",))
    data: dict[str, Any] = {
        "url": url,
        "pages_crawled": pages if crawl != "failed" else min(pages, 1),
        "crawl_status": crawl,
        "emails": emails,
        "phones": phones,
        "addresses": addresses,
        **socials,
        "markdown_compendium": markdown,
        "compendium": {
            "chars": len(markdown) if markdown else 0,
            "available": markdown is not None,
            "cleanup_level": rng.choice(("fit", "raw", "citations", "minimal")),
            "storage_location": "inline",
        }
        if markdown is not None or rng.random() < 0.5
        else None,
        "company_vitals": {
            "name": name,
            "summary": rng.choice(w.SENTENCES),
            "industry": industry,
            "services": rng.sample(w.SERVICES, rng.randint(1, 4)),
            "target_audience": f"{rng.choice(('Small', 'Mid-market', 'Enterprise'))} {industry} companies",
        }
        if ai
        else None,
        "pain_points": _pain_points(rng, variants) if ai else None,
        "lead_scoring": {
            "icp_fit_score": round(rng.uniform(0.05, 0.98), 2),
            "champ_analysis": {
                "challenges": challenges,
                "authority": f"{decision['name']} ({decision['title']}) leads vendor selection"
                if decision
                else "Unclear; no decision maker identified",
                "money": rng.choice(
                    (
                        "Series B funded, budget allocated for Q1 tooling",
                        "Bootstrapped; price sensitive",
                        "Public company, annual budget cycle",
                    )
                ),
                "prioritization": rng.choice(
                    (
                        "High - listed as a top initiative",
                        "Medium - mentioned in hiring plans",
                        "Low",
                    )
                ),
            },
        }
        if champ
        else None,
        "team_members": team,
        "personalization_hooks": {
            "company_name": name,
            "decision_maker": f"{decision['name']} ({decision['title']})" if decision else None,
            "key_challenge": challenges[0],
            "urgency_signal": rng.choice(w.MENTIONS),
            "personalization_angle": f"Show how {rng.choice(w.SERVICES).lower()} addresses "
            f"{challenges[0].lower()}",
        }
        if champ
        else None,
        "metadata": {
            "spa_enabled": bool(payload.get("enable_spa", rng.random() < 0.5)),
            "sitemap_used": rng.random() < 0.7,
            "browser_rendering_available": True,
            "crawl_strategy": rng.choice(("sitemap", "bestfirst", "bfs", "dfs")),
            "total_emails_found": len(emails) + rng.randint(0, 3),
            "total_phones_found": len(phones),
        },
    }
    if variants and rng.random() < 0.04:
        return legacy_layout(data)
    return data


def legacy_layout(data: dict[str, Any]) -> dict[str, Any]:
    """The pre-2.7.1 shape: contacts and socials nested under ``contact_info``."""
    flat = dict(data)
    social = {key: flat.pop(key) for key in w.SOCIALS}
    contact = {
        "emails": flat.pop("emails"),
        "phones": flat.pop("phones"),
        "addresses": flat.pop("addresses"),
        "social_media": social,
    }
    return {"url": flat.pop("url"), "contact_info": contact, **flat}
