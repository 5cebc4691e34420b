"""The keep-alive poster against real aiohttp servers: answers read exactly, connections reused
until the server closes them, what it cannot read refused, TCP_NODELAY on its sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from aiohttp import web

from keepers.bus.brokers import free_port
from keepers.http11 import KeepAlivePoster, MalformedAnswer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[..., Awaitable[tuple[int, list[tuple[int, bytes]]]]]


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Serve]:
    """Starts a server for a handler; returns its port and the (client port, body) it saw."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler, **server: object) -> tuple[int, list[tuple[int, bytes]]]:
        seen: list[tuple[int, bytes]] = []

        async def record(request: web.Request) -> web.StreamResponse:
            peer = request.transport.get_extra_info("peername") if request.transport else None
            seen.append((peer[1] if peer else 0, await request.read()))
            return await handler(request)

        app = web.Application()
        app.router.add_post("/{tail:.*}", record)
        runner = web.AppRunner(app, **server)  # type: ignore[arg-type]
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return port, seen

    yield start
    for runner in runners:
        await runner.cleanup()


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(status=201, body=request.path.encode() + b":" + body)


@pytest.mark.asyncio
async def test_answers_are_read_exactly_and_the_connection_is_reused(serve: Serve) -> None:
    port, seen = await serve(echo)
    poster = KeepAlivePoster("127.0.0.1", port, base_path="/api/")
    try:
        async with asyncio.timeout(10):
            first = await poster.post("/v1/tx", b"\x00\x01tx")
            second = await poster.post("/v1/txs", b"")
    finally:
        await poster.close()
    assert (first, second) == ((201, b"/api/v1/tx:\x00\x01tx"), (201, b"/api/v1/txs:"))
    assert [body for _, body in seen] == [b"\x00\x01tx", b""]
    assert poster.opened == 1 and seen[0][0] == seen[1][0]  # one connection, one client port


@pytest.mark.asyncio
async def test_a_connection_the_server_closes_is_not_used_again(serve: Serve) -> None:
    async def closing(request: web.Request) -> web.Response:
        return web.Response(body=b"bye", headers={"Connection": "close"})

    port, _ = await serve(closing)
    idle_port, _ = await serve(echo, keepalive_timeout=0.05)
    poster = KeepAlivePoster("127.0.0.1", port)
    idle = KeepAlivePoster("127.0.0.1", idle_port)
    try:
        async with asyncio.timeout(10):
            assert await poster.post("/", b"a") == (200, b"bye")
            assert await poster.post("/", b"b") == (200, b"bye")
            assert await idle.post("/", b"c") == (201, b"/:c")
            await asyncio.sleep(0.5)  # the server closes the idle connection meanwhile
            assert await idle.post("/", b"d") == (201, b"/:d")
    finally:
        await poster.close()
        await idle.close()
    assert (poster.opened, idle.opened) == (2, 2)


@pytest.mark.asyncio
async def test_an_answer_without_content_length_is_refused(serve: Serve) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"{}")
        await response.write_eof()
        return response

    port, _ = await serve(chunked)
    poster = KeepAlivePoster("127.0.0.1", port)
    try:
        async with asyncio.timeout(10):
            with pytest.raises(MalformedAnswer, match="Transfer-Encoding"):
                await poster.post("/", b"x")
    finally:
        await poster.close()


@pytest.mark.asyncio
async def test_a_server_that_hangs_up_mid_answer_is_an_incomplete_read() -> None:
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(half, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    poster = KeepAlivePoster("127.0.0.1", port)
    try:
        async with asyncio.timeout(10):
            with pytest.raises(asyncio.IncompleteReadError):
                await poster.post("/", b"")
            opened = poster.opened
    finally:
        await poster.close()
        server.close()
        await server.wait_closed()
    assert opened == 1


@pytest.mark.asyncio
async def test_its_connections_have_tcp_nodelay() -> None:
    nodelay: list[int] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await reader.read()  # until the client closes its end
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    poster = KeepAlivePoster("127.0.0.1", port)
    try:
        async with asyncio.timeout(10):
            assert await poster.post("/", b"") == (204, b"")
        [conn] = poster._idle
        sock = conn.writer.get_extra_info("socket")
        nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    finally:
        await poster.close()
        server.close()
        await server.wait_closed()
    assert nodelay[0] != 0
