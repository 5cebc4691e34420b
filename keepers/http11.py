"""POST over keep-alive HTTP/1.1 connections, for the node's transaction endpoints.

:class:`keepers.rpc.NodeClient` sends every transaction with :class:`KeepAlivePoster` and reads
everything else through aiohttp. A transaction's request is the latency-critical step of every
keeper, and aiohttp's client took ~0.25 ms on the project's 2-core machine before a small
request reached the socket (it builds a request object per call, and on Python 3.11 writes the
body from a task of its own, a turn of the event loop later); a whole ``/v1/tx`` round trip
between two otherwise idle processes measured p50 1.24 ms through aiohttp against 0.74 ms
here. Here the request is one ``write`` of bytes made in place.

What it speaks, and nothing more:

* requests: ``POST`` with an ``application/octet-stream`` body and ``Content-Length``;
* answers: a status line, headers and a body framed by ``Content-Length`` (the node's answers
  always carry one). An answer without it, or one that does not parse, is a
  :class:`MalformedAnswer`; the connection is then dropped;
* keep-alive: a connection goes back to the pool after a whole answer unless the server said
  ``Connection: close`` (or spoke HTTP/1.0); one the server closed while idle is noticed
  (end of stream already read) and dropped before use. Any error drops the connection.

Transport failures are raised as they come (:class:`OSError`, :class:`asyncio.IncompleteReadError`
when the server hung up mid-answer, :class:`TimeoutError`): the caller decides what to retry.
TCP_NODELAY is set by asyncio on every TCP connection it opens.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Final

__all__ = ["KeepAlivePoster", "MalformedAnswer"]

MAX_HEAD_BYTES: Final = 64 * 1024  # status line and headers of one answer


class MalformedAnswer(Exception):
    """The server's answer is not HTTP/1.1 this client reads (no ``Content-Length``, a bad
    status line or header)."""


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @property
    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class KeepAlivePoster:
    """``await poster.post("/v1/tx", body)`` -> ``(status, answer body)``.

    At most ``max_connections`` requests at once (others wait for a connection); at most that
    many idle connections are kept. Use from one event loop; :meth:`close` closes the idle ones.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        base_path: str = "",
        max_connections: int = 100,
        connect_timeout: float | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.host = host
        self.port = port
        self._base_path = base_path.rstrip("/")
        self._host_header = (host if port == 80 else f"{host}:{port}").encode()
        self._connect_timeout = connect_timeout
        self._idle: list[_Connection] = []
        self._max_idle = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self.opened = 0  # connections opened so far

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """One request on a pooled connection; raises what the connection raised."""
        target = (self._base_path + path).encode()
        head = (
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\n\r\n" % (target, self._host_header, len(body))
        )
        async with self._slots:
            conn = self._take_idle() or await self._open()
            try:
                conn.writer.write(head + body)
                status, keep_alive, answer = await _read_answer(conn.reader)
            except BaseException:
                conn.close()
                raise
            if keep_alive and len(self._idle) < self._max_idle:
                self._idle.append(conn)
            else:
                conn.close()
        return status, answer

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to be stale
            if conn.usable:
                return conn
            conn.close()
        return None

    async def _open(self) -> _Connection:
        async with asyncio.timeout(self._connect_timeout):
            reader, writer = await asyncio.open_connection(
                self.host, self.port, limit=MAX_HEAD_BYTES
            )
        self.opened += 1
        return _Connection(reader, writer)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    """``(status, whether the connection may be reused, body)`` of one answer."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise MalformedAnswer(f"answer head longer than {MAX_HEAD_BYTES} bytes") from None
    lines = head[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or not code.isdigit():
        raise MalformedAnswer(f"bad status line {lines[0][:80]!r}")
    keep_alive = version == b"HTTP/1.1"
    length: int | None = None
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise MalformedAnswer(f"bad header line {line[:80]!r}")
        name = name.strip().lower()
        value = value.strip()
        if name == b"content-length":
            if not value.isdigit():
                raise MalformedAnswer(f"bad Content-Length {value[:20]!r}")
            length = int(value)
        elif name == b"connection":
            keep_alive = value.lower() != b"close"
        elif name == b"transfer-encoding":
            raise MalformedAnswer(f"Transfer-Encoding {value[:20]!r} is not read here")
    if length is None:
        raise MalformedAnswer("answer without Content-Length")
    body = await reader.readexactly(length)
    return int(code), keep_alive, body
