"""Sending an answer, honestly or not: JSON responses and the transport-level faults.

A normal answer is a JSON response. A hang holds the request open until ``hang_s`` real seconds
pass or the client goes away. A reset aborts the TCP connection with SO_LINGER 0, so the client sees
a real RST. A truncated body announces the full ``Content-Length``, sends only part of it, then
closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from typing import Any

from aiohttp import web

from harvester.sim.faults import Fault

JSON_TYPE = "application/json"


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, ensure_ascii=False).encode(),
        content_type=JSON_TYPE,
        headers=headers,
    )


class Dropped(web.HTTPException):
    """Raised after the connection was deliberately torn down; nothing more is sent."""

    status_code = 499


def _abort(request: web.Request, rst: bool) -> None:
    transport = request.transport
    if transport is None:
        return
    if rst:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


async def hang(request: web.Request, seconds: float) -> bool:
    """Wait ``seconds`` real seconds or until the client disconnects; True if still connected."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return False
        await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    return True


async def deliver(
    request: web.Request,
    status: int,
    body: Any,
    headers: dict[str, str],
    fault: Fault,
    hang_s: float,
) -> web.StreamResponse:
    """Send ``body`` unless the fault says to misbehave."""
    if fault is Fault.HANG and not await hang(request, hang_s):
        _abort(request, rst=False)
        raise Dropped()
    if fault is Fault.RESET:
        _abort(request, rst=True)
        raise Dropped()
    if fault is Fault.TRUNCATE:
        payload = json.dumps(body, ensure_ascii=False).encode()
        response = web.StreamResponse(status=status, headers=headers)
        response.content_type = JSON_TYPE
        response.content_length = len(payload)
        await response.prepare(request)
        await response.write(payload[: max(1, len(payload) // 2)])
        _abort(request, rst=False)
        raise Dropped()
    return json_response(status, body, headers)
