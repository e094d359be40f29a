"""``harvester export VIEW``: where the rows go and what is said about them.

The COPY itself is ``db.export``'s: PostgreSQL writes the rows and each chunk of bytes comes here
to be written to stdout or to ``--out FILE``, which is replaced only once the export is complete.
``--bom`` puts a UTF-8 byte order mark first, for Excel, which otherwise reads a UTF-8 CSV as the
local legacy code page. A reader that goes away (``export … | head``) ends the export quietly;
the one-line JSON summary goes to stdout after a file, to stderr after rows on stdout.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from harvester import db
from harvester.commands.output import silence_stdout
from harvester.config import Config
from harvester.db.export import copy_view
from harvester.errors import HarvesterError, UsageError

BOM = "\ufeff".encode()


@dataclass(frozen=True, slots=True)
class Since:
    """``--since``: a change number, or a time (converted to the last change number before it)."""

    change: int | None = None
    time: datetime | None = None


def parse_since(text: str | None) -> Since:
    """``--since``: a change number (digits) or an ISO 8601 time (no offset: UTC)."""
    if text is None:
        return Since()
    value = text.strip()
    if value.isdigit():
        return Since(change=int(value))
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--since: expected a change number or an ISO 8601 time, got {text[:80]!r}"
        ) from None
    return Since(time=when if when.tzinfo else when.replace(tzinfo=UTC))


class StreamSink:
    """Writes COPY's chunks to a binary stream; remembers when the reader went away (``export … |
    head``), so that the COPY this aborts is not mistaken for a database problem."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.closed = False

    async def __call__(self, chunk: bytes) -> None:
        try:
            self.stream.write(chunk)
        except BrokenPipeError:
            self.closed = True
            raise


class FileTarget:
    """``--out FILE``: written to a temporary file beside it and renamed over it on success, so a
    failed export never leaves a half-written file where a complete one was."""

    def __init__(self, path: Path) -> None:
        self.path = path
        directory = path.parent if str(path.parent) else Path(".")
        try:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
        except OSError as exc:
            raise HarvesterError(f"--out: cannot write in {directory}: {exc.strerror or exc}") from None
        self.tmp = Path(name)
        self.stream = os.fdopen(fd, "wb")

    def commit(self) -> None:
        self.stream.close()
        os.replace(self.tmp, self.path)

    def abandon(self) -> None:
        self.stream.close()
        self.tmp.unlink(missing_ok=True)


async def export_view(
    cfg: Config,
    view: str,
    *,
    fmt: str,
    out: str | None,
    bom: bool,
    tags: dict[str, str],
    since: Since,
) -> None:
    """``export``: the view streamed to ``out`` (replaced only when complete) or to stdout, and a
    one-line JSON summary (on stderr when the rows went to stdout)."""
    pool = await db.open_pool(cfg.database, max_size=1, read_only=True)
    target = None
    sink = None
    try:
        target = FileTarget(Path(out)) if out else None
        sink = StreamSink(target.stream if target is not None else sys.stdout.buffer)
        if bom and fmt == "csv":
            sink.stream.write(BOM)
        done = await copy_view(
            pool, view, fmt=fmt, sink=sink, tags=tags, since_change=since.change, since_time=since.time
        )
        sink.stream.flush()
    except BaseException as exc:
        if target is not None:
            target.abandon()
        if sink is not None and (sink.closed or isinstance(exc, BrokenPipeError)):
            # `export ... | head`: the reader has what it wanted.
            silence_stdout(sys.stdout.fileno())
            return
        raise
    finally:
        await pool.close()
    if target is not None:
        target.commit()
    summary = json.dumps(done.as_dict())
    print(summary, file=sys.stdout if target is not None else sys.stderr)
