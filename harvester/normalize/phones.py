"""E.164 forms of phone numbers the API gave only as raw text, with ``phonenumbers``.

``e164`` is pure: the raw text and a default region (``normalize.default_region``, passed in by
the caller; never read here) in, the ``+CCNNN…`` form or ``None`` out. It refuses rather than
guesses. A number is read as international when it starts with ``+`` (or ``00`` style prefixes the
library knows for the region), else as a national number of the default region; without a default
region only ``+`` numbers can be read. The parsed number must then be *valid* (its length and
prefix match an assigned range of its country's numbering plan, not just a plausible digit
count), and every digit of its national number must have been written as a digit: letters are
never turned into digits, so a vanity number (``1-800-FLOWERS``) or a trailing word stays without
an E.164 form. An extension (``x55``, ``ext. 55``) is not part of E.164: the form is the line's
own number, and the raw text keeps the extension.
"""

from __future__ import annotations

import phonenumbers

# The library refuses longer input itself; a shorter bound keeps garbage cheap.
MAX_PHONE_CHARS = 250
REGIONS: frozenset[str] = frozenset(phonenumbers.SUPPORTED_REGIONS)


def region_code(value: str) -> str | None:
    """A known two-letter region code in upper case (``us`` → ``US``), or None."""
    code = value.strip().upper()
    return code if code in REGIONS else None


def e164(raw: str | None, region: str | None = None) -> str | None:
    """The E.164 form of ``raw`` when it reads as one valid number, else None."""
    if raw is None:
        return None
    text = raw.strip()
    if not text or len(text) > MAX_PHONE_CHARS:
        return None
    try:
        number = phonenumbers.parse(text, region or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    written = phonenumbers.normalize_digits_only(text)
    if phonenumbers.national_significant_number(number) not in written:
        return None  # some digits came from letters (a vanity number, a word after the number)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
