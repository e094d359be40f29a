"""Fair in-flight slots among accounts: a backlog on one never takes another's part."""

from __future__ import annotations

import pytest

from harvester.scheduling.slots import Slots, fair_share

ACCOUNTS = ("a", "b", "c")


@pytest.mark.parametrize(
    ("account", "in_flight", "wanting", "expected"),
    [
        # alone with work: its own part, plus what the idle ones can lend (half of each part)
        ("a", {}, set(), 8 + 4 + 4),
        ("a", {"a": 16}, {"a"}, 0),
        # an idle account's fresh job always finds its kept half free
        ("b", {"a": 16}, {"a"}, 4),
        # two with work: each its own part, the idle one lends half
        ("a", {"a": 8, "b": 8}, {"a", "b"}, 4),
        ("b", {"a": 12, "b": 4}, {"a", "b"}, 4),
        # nobody borrows what a wanting account is owed
        ("a", {"a": 8}, {"a", "b", "c"}, 0),
        ("c", {"a": 8, "b": 8}, {"a", "b", "c"}, 8),
        ("a", {"a": 3}, {"a", "b", "c"}, 5),
    ],
)
def test_fair_share(account: str, in_flight: dict[str, int], wanting: set[str], expected: int) -> None:
    assert fair_share(account, 8, ACCOUNTS, in_flight, wanting) == expected


def test_one_account_is_its_own_max_in_flight() -> None:
    assert fair_share("default", 8, ("default",), {"default": 3}, {"default"}) == 5


def test_a_backlog_never_holds_every_slot_of_the_process() -> None:
    """However the backlog account claims, each other account keeps at least half its part."""
    slots = Slots(8, ACCOUNTS)
    slots.want("a", True)
    while slots.free_for("a"):
        slots.took("a")
    assert slots.in_flight["a"] == 16
    assert slots.free_for("b") == 4 and slots.free_for("c") == 4
    slots.want("b", True)
    slots.took("b")
    assert slots.free_for("a") == 0


async def test_giving_a_slot_back_wakes_every_account() -> None:
    slots = Slots(2, ("a", "b"))
    event = slots.freed("b")
    slots.took("a")
    slots.gave_back("a")
    assert event.is_set() and slots.in_flight["a"] == 0
