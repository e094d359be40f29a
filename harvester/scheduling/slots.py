"""In-flight slots shared among accounts: ``rate_limit.max_in_flight`` per account, lendable.

Each account claims its own jobs under its own budget and token, but the process's requests in
flight are one pool of ``max_in_flight`` slots per account. ``fair_share`` is the rule, pure: an
account always has its own part; it may borrow free slots of the others, but never the part of
an account that has due work, and never the last half of an idle account's part, so that a fresh
job of an idle account finds a slot at once. A backlog of 100,000 jobs on one account therefore
never delays another account's claim. ``Slots`` is the small mutable shell the workers of one
process share.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence, Set


def fair_share(
    account: str,
    per_account: int,
    accounts: Sequence[str],
    in_flight: Mapping[str, int],
    wanting: Set[str],
) -> int:
    """How many more jobs ``account`` may claim now.

    ``in_flight``: jobs each account holds; ``wanting``: accounts with due work they could not
    claim yet. Every account owns ``per_account`` slots; ``account`` may use every free slot not
    owed to another: a wanting account is owed its whole part, an idle one half of it.
    """
    names = set(accounts) | {account}
    total = per_account * len(names)
    free = max(0, total - sum(max(0, in_flight.get(name, 0)) for name in names))
    keep_idle = math.ceil(per_account / 2)
    owed = sum(
        max(0, (per_account if name in wanting else keep_idle) - in_flight.get(name, 0))
        for name in names
        if name != account
    )
    return max(0, free - owed)


class Slots:
    """One process's in-flight slots, shared by the workers of its accounts."""

    def __init__(self, per_account: int, accounts: Sequence[str]) -> None:
        self.per_account = per_account
        self.accounts = tuple(accounts)
        self.in_flight: dict[str, int] = {}
        self.wanting: set[str] = set()
        self._freed: dict[str, asyncio.Event] = {}

    def freed(self, account: str) -> asyncio.Event:
        """Set whenever any account gives a slot back: a worker waiting for one looks again."""
        return self._freed.setdefault(account, asyncio.Event())

    def free_for(self, account: str) -> int:
        return fair_share(account, self.per_account, self.accounts, self.in_flight, self.wanting)

    def want(self, account: str, wants: bool) -> None:
        """Whether ``account`` has due work it could not claim yet (its last claim came back full)."""
        if wants:
            self.wanting.add(account)
        else:
            self.wanting.discard(account)

    def took(self, account: str) -> None:
        self.in_flight[account] = self.in_flight.get(account, 0) + 1

    def gave_back(self, account: str) -> None:
        self.in_flight[account] = max(0, self.in_flight.get(account, 0) - 1)
        for event in self._freed.values():
            event.set()
