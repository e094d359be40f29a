"""Token rotation while the daemon runs: SIGHUP, or a token file that changed, re-reads every token.

``Reload`` carries the request from the signal handler (``commands.cli`` installs it) to
``watch_tokens``, which also looks at the token files every ``TOKEN_CHECK_S``. ``reread_tokens``
reads each account's token again and hands a new one to its lane (``Lane.rotate``): requests
already sent finish with the old one, and the jobs a refused credential held become due at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Sequence

from harvester import lifetime, logs
from harvester.config import Config, reread_token
from harvester.daemon.lanes import Lane
from harvester.errors import ConfigError, DatabaseError

log = logs.get("harvester.daemon.tokens")
TOKEN_CHECK_S = 2.0  # how often token files are looked at for a change (real seconds)


class Reload:
    """Requests to re-read the tokens: ``request()`` from the SIGHUP handler, ``take()`` here."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._asked = False

    def request(self) -> None:
        self._asked = True
        self.event.set()

    def take(self) -> bool:
        asked, self._asked = self._asked, False
        return asked


async def watch_tokens(
    cfg: Config, lanes: Sequence[Lane], stop: asyncio.Event, reload: Reload | None
) -> None:
    """Re-read the tokens on SIGHUP (``reload``) and whenever a token file changes."""
    files = {lane.account.token_file for lane in lanes if lane.account.token_file}
    seen = {path: _stat(path) for path in files}
    while not stop.is_set():
        hup = await _signalled(reload, stop, TOKEN_CHECK_S)
        changed = {path for path in files if _stat(path) != seen[path]}
        if not changed and not hup:
            continue
        seen.update({path: _stat(path) for path in changed})
        rotated = await reread_tokens(lanes)
        log.info("tokens_reread", rotated=rotated, trigger="sighup" if hup else "file")


async def reread_tokens(lanes: Sequence[Lane]) -> list[str]:
    """Read every account's token again (SIGHUP, a changed token file); returns the accounts whose
    token changed. An unreadable or empty file keeps the token in use and says so."""
    changed: list[str] = []
    for lane in lanes:
        try:
            token = reread_token(lane.account)
        except ConfigError as exc:
            log.error("token_reread_failed", account=lane.name, error=logs.scrub(str(exc)))
            continue
        if token and lane.rotate(token):
            lane.account = dataclasses.replace(lane.account, token=token)
            changed.append(lane.name)
            with contextlib.suppress(DatabaseError):  # else they come due at their recheck time
                await lane.store.make_auth_held_due()
    return changed


async def _signalled(reload: Reload | None, stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds``; True when a reload was asked for meanwhile."""
    if reload is None:
        await lifetime.wait(stop, seconds)
        return False
    await lifetime.wait(stop, seconds, reload.event)
    return reload.take()


def _stat(path: str) -> tuple[float, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime, info.st_size
