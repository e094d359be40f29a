"""The SpiderIQ client: one aiohttp session against one base URL and credential.

This module owns the wire: URLs, the Bearer header, explicit timeouts, reading every body in full,
and turning transport failures (timeouts, resets, truncated bodies) into ``Transient`` outcomes.
What an answer means is ``classify``'s business; the client hands it the status, headers and
bytes, and its own scrubber, which removes this credential (and its parts) before the process-wide
one in ``logs``, so the token never reaches a reason, a detail or a repr. It never touches the
database.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

import aiohttp

from harvester import logs
from harvester.api import classify
from harvester.api.outcomes import JobPage, Outcome, RateLimited, Transient
from harvester.errors import ConfigError

if TYPE_CHECKING:
    from harvester.config import ApiConfig

_O = TypeVar("_O")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SpiderIQ:
    """One aiohttp session against one base URL and credential. Use as an async context manager."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        total_timeout_s: float,
        verify_tls: bool = True,
        user_agent: str = "harvester/0.1",
        allow_insecure: bool = False,
        session: aiohttp.ClientSession | None = None,
        time_scale: float = 1.0,
        on_remaining: Callable[[int], None] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("api.base_url: must be an http(s) URL")
        if parts.scheme == "http" and not allow_insecure and not is_loopback(parts.hostname):
            raise ConfigError("api.base_url: plain http is refused for non-loopback hosts")
        if not token or any(c in token for c in "\r\n"):
            raise ConfigError("api.token: empty or not a single line")
        self.base_url = base_url.rstrip("/")
        self._on_remaining = on_remaining  # told what X-RateLimit-Remaining says, answer by answer
        # the scrubber classification uses: this credential, then every registered one
        self._clean = logs.scrubber(token)
        self._headers = {
            "Authorization": f"Bearer {token}",
            "User-Agent": user_agent,
            "Accept": "application/json",
        }
        self._timeout = aiohttp.ClientTimeout(
            total=total_timeout_s,
            connect=connect_timeout_s,
            sock_connect=connect_timeout_s,
            sock_read=read_timeout_s,
        )
        self._verify_tls = verify_tls
        self._time_scale = time_scale
        self._session = session
        self._owns_session = session is None

    def set_token(self, token: str) -> None:
        """Send ``token`` from the next request on (rotation); requests in flight keep the old one,
        since each took the header mapping in use when it left."""
        if not token or any(c in token for c in "\r\n"):
            raise ConfigError("api.token: empty or not a single line")
        self._clean = logs.scrubber(token)
        self._headers = {**self._headers, "Authorization": f"Bearer {token}"}

    @classmethod
    def from_config(
        cls,
        api: ApiConfig,
        token: str,
        time_scale: float = 1.0,
        on_remaining: Callable[[int], None] | None = None,
    ) -> SpiderIQ:
        """The client the ``[api]`` section describes; ``token`` is the revealed credential."""
        return cls(
            api.base_url,
            token,
            connect_timeout_s=api.connect_timeout_s,
            read_timeout_s=api.read_timeout_s,
            total_timeout_s=api.total_timeout_s,
            verify_tls=api.verify_tls,
            user_agent=api.user_agent,
            allow_insecure=api.allow_insecure,
            time_scale=time_scale,
            on_remaining=on_remaining,
        )

    def __repr__(self) -> str:
        return f"SpiderIQ(base_url={self.base_url!r})"

    async def __aenter__(self) -> SpiderIQ:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily so it belongs to the running loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._verify_tls),
                timeout=self._timeout,
            )
            # aiohttp silently resends a GET once when the connection drops; that request would
            # bypass the rate limiter, so a drop is a Transient outcome and the worker decides.
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
            self._owns_session = True
        return self._session

    async def _get(
        self, path: str, params: Mapping[str, str] | None = None
    ) -> tuple[int, Mapping[str, str], bytes] | Transient:
        try:
            async with self._get_session().get(
                self.base_url + path,
                params=params,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                if self._on_remaining is not None:
                    left = classify.remaining(response.headers)
                    if left is not None:
                        self._on_remaining(left)
                return response.status, response.headers, body
        except TimeoutError:
            return Transient(reason="timeout")
        except aiohttp.ClientPayloadError as exc:
            return Transient(reason=self._clean(f"truncated body: {type(exc).__name__}: {exc}"))
        except aiohttp.ServerDisconnectedError:
            return Transient(reason="server disconnected")
        except (aiohttp.ClientError, OSError) as exc:
            return Transient(reason=self._clean(f"connection error: {type(exc).__name__}: {exc}"))

    def _real_time(self, outcome: _O) -> _O:
        """A Retry-After in real seconds: a time-scaled API (the simulator at ``--speed``) counts
        its seconds ``time_scale`` times faster. ``X-RateLimit-Reset`` is wall time already."""
        if isinstance(outcome, RateLimited) and outcome.retry_after_s is not None and self._time_scale != 1.0:
            return dataclasses.replace(outcome, retry_after_s=outcome.retry_after_s / self._time_scale)
        return outcome

    async def fetch_result(self, job_id: UUID) -> Outcome:
        got = await self._get(f"/api/v1/jobs/{job_id}/results")
        if isinstance(got, Transient):
            return got
        return self._real_time(classify.classify_result(*got, time.time(), scrub=self._clean))

    async def list_jobs(
        self,
        *,
        page: int,
        page_size: int = 100,
        sort_by: str = "updated_at",
        sort_order: str = "desc",
        status_filter: str | None = None,
    ) -> JobPage | Outcome:
        params = {
            "page": str(page),
            "page_size": str(page_size),
            "sort_by": sort_by,
            "sort_order": sort_order,
        }
        if status_filter:
            params["status_filter"] = status_filter
        got = await self._get("/api/v1/jobs/list", params)
        if isinstance(got, Transient):
            return got
        return self._real_time(
            classify.classify_list(*got, time.time(), page=page, page_size=page_size, scrub=self._clean)
        )
