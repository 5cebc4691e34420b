"""Brokers this project starts itself: a Mosquitto subprocess, or an embedded amqtt broker.

* :class:`MosquittoBroker` runs the real ``mosquitto`` binary on a free port with the
  project's configuration (:func:`mosquitto_config`, the same text as
  ``docker/mosquitto.conf`` with the listener changed), in a temporary directory that holds the
  config and the broker's log. Ready when the broker logs that it is running; stoppable,
  killable and restartable on the same port (tests drop every connection that way).
* :class:`EmbeddedBroker` runs amqtt inside this process's event loop (MQTT 3.1.1 only, no
  shared subscriptions): the default of ``keepers demo``, which needs no set-up.

Both are async context managers and expose ``url`` (``mqtt://127.0.0.1:PORT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Final

from amqtt.adapters import (  # type: ignore[import-untyped]
    StreamReaderAdapter,
    StreamWriterAdapter,
)
from amqtt.broker import Broker  # type: ignore[import-untyped]

DEFAULT_MQTT_PORT: Final = 1883
MOSQUITTO_SEARCH_PATHS: Final = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
MAX_QUEUED_MESSAGES: Final = 1_000_000
MAX_INFLIGHT_MESSAGES: Final = 1_000

_MOSQUITTO_CONF: Final = """\
# Mosquitto for drift-keepers. The tests start the same configuration with only the listener
# line changed (keepers.bus.brokers.mosquitto_config); a test checks this file against it.

# Every interface inside the container (compose reaches it by service name); the tests listen
# on 127.0.0.1 and a free port instead.
{listener}
# Mosquitto 2 refuses anonymous clients unless told. The bus needs no broker accounts: the node
# verifies every signature itself. Do not expose this port beyond the deployment's network.
allow_anonymous true

# The bus carries no state worth keeping across a broker restart: the node is the source of
# truth, retained slot and oracle messages are republished every slot, and subscribers resync
# from the node's snapshot after a gap.
persistence false

# Without this a QoS 1 round trip measured 88 ms here instead of 0.35 ms: Nagle's algorithm
# holds small packets back while waiting for the peer's delayed ACK.
set_tcp_nodelay true

# Messages queued per client beyond those in flight. The default, 1000, silently DROPPED 34-78%
# of an overload stream to a slow subscriber here, at QoS 0 and QoS 1 alike. Raised so a burst
# queues at the broker (bounded by memory) instead of vanishing; consumers still detect any
# loss by sequence number.
max_queued_messages {max_queued}
# No byte limit on that queue either (0, the default, said explicitly).
max_queued_bytes 0

# QoS 1 messages in flight to one client before the broker waits for its PUBACKs. The default,
# 20, caps a subscriber at 20 messages per network round trip: no difference on loopback
# (measured), a ceiling between hosts.
max_inflight_messages {max_inflight}

# Startup, connections and errors to stderr, which is unbuffered (the tests wait for
# "running" in it; stdout to a file is block-buffered and shows nothing for a long while).
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
"""


def mosquitto_config(port: int = DEFAULT_MQTT_PORT, bind: str | None = None) -> str:
    """The project's Mosquitto configuration, listening on ``port`` (on every interface unless
    ``bind`` names one)."""
    listener = f"listener {port}" if bind is None else f"listener {port} {bind}"
    return _MOSQUITTO_CONF.format(
        listener=listener, max_queued=MAX_QUEUED_MESSAGES, max_inflight=MAX_INFLIGHT_MESSAGES
    )


def find_mosquitto() -> str | None:
    """The ``mosquitto`` binary on PATH or in the usual sbin directories, or ``None``."""
    found = shutil.which("mosquitto")
    if found is not None:
        return found
    for candidate in MOSQUITTO_SEARCH_PATHS:
        if Path(candidate).is_file():
            return candidate
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class BrokerStartError(RuntimeError):
    """The broker did not start; ``log`` is what it printed."""

    def __init__(self, detail: str, log: str = "") -> None:
        super().__init__(f"{detail}\n{log}" if log else detail)
        self.log = log


class MosquittoBroker:
    """A ``mosquitto`` subprocess on ``host:port`` (a free port unless one is given)."""

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        binary: str | None = None,
        ready_timeout: float = 5.0,
    ) -> None:
        found = binary or find_mosquitto()
        if found is None:
            raise BrokerStartError("no mosquitto binary found (PATH, /usr/sbin, /usr/local/sbin)")
        self.binary = found
        self.host = host
        self._fixed_port = port
        self.port = port if port is not None else 0
        self._ready_timeout = ready_timeout
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def log_path(self) -> Path:
        if self._dir is None:
            raise RuntimeError("the broker has not been started")
        return Path(self._dir.name) / "mosquitto.log"

    def log(self) -> str:
        path = self.log_path
        return path.read_text(errors="replace") if path.exists() else ""

    async def __aenter__(self) -> MosquittoBroker:
        try:
            await self.start()
        except BaseException:
            self._cleanup()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    async def start(self) -> None:
        """Start the broker; with no fixed port, retry on another port if one was taken."""
        if self.running:
            raise RuntimeError("mosquitto is already running")
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="keepers-mosquitto-")
        attempts = 1 if self._fixed_port is not None else 5
        for attempt in range(attempts):
            if self._fixed_port is None:
                self.port = free_port(self.host)
            try:
                await self._spawn()
                return
            except BrokerStartError:
                if attempt == attempts - 1:
                    raise

    async def _spawn(self) -> None:
        if self._dir is None:
            raise RuntimeError("start() creates the broker's directory first")
        conf = Path(self._dir.name) / "mosquitto.conf"
        conf.write_text(mosquitto_config(self.port, self.host))
        log_path = self.log_path
        # Appended across restarts; readiness is judged on what this run printed.
        start = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                self.binary,
                "-c",
                str(conf),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
            )
        self._process = process

        def printed() -> str:
            with log_path.open("rb") as f:
                f.seek(start)
                return f.read().decode(errors="replace")

        try:
            async with asyncio.timeout(self._ready_timeout):
                # Mosquitto's only readiness signal is a line in its log, so poll it.
                while "running" not in printed() and process.returncode is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        except TimeoutError:
            await self.kill()
            raise BrokerStartError("mosquitto did not report running in time", printed()) from None
        if process.returncode is not None:
            self._process = None
            raise BrokerStartError(f"mosquitto exited on port {self.port}", printed())

    async def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 5 s): clients see their connections close."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            async with asyncio.timeout(5.0):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    async def kill(self) -> None:
        """SIGKILL: the broker vanishes without closing anything cleanly."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.kill()
        await process.wait()

    async def restart(self) -> None:
        """Stop and start again on the same port (clients reconnect to the same URL)."""
        await self.stop()
        await self._spawn()


class EmbeddedBroker:
    """amqtt's broker in this event loop, anonymous, on ``host:port`` (a free port by default).

    The TCP listener is this class's own (handed to amqtt as an "external" listener), so it
    holds every client connection: :meth:`stop` cuts them all and frees the port even when
    amqtt's own shutdown stalls, which it does with a QoS 1 delivery in flight (amqtt 0.12
    loses a PUBACK that arrives before it registers its waiter, then waits for it forever).
    """

    _LISTENER = "default"

    def __init__(self, port: int | None = None, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self._broker: Broker | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._broker is not None

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._broker is not None:
            raise RuntimeError("the embedded broker is already running")
        broker = Broker(
            {
                # "bind" only marks the listener as enabled; the socket is ours.
                "listeners": {self._LISTENER: {"type": "external", "bind": self.url}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
        )
        try:
            await broker.start()
            self._server = await asyncio.start_server(
                self._accept, self.host, self.port, reuse_address=True
            )
        except Exception as exc:
            with contextlib.suppress(Exception):
                await broker.shutdown()
            raise BrokerStartError(f"amqtt did not start on {self.url}: {exc!r}") from exc
        self._broker = broker

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        broker = self._broker
        task = asyncio.current_task()
        if broker is None or task is None:
            writer.transport.abort()
            return
        self._connections.add(task)
        self._writers.add(writer)
        try:
            await broker.external_connected(
                StreamReaderAdapter(reader), StreamWriterAdapter(writer), self._LISTENER
            )
        finally:
            self._writers.discard(writer)
            self._connections.discard(task)
            writer.transport.abort()

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # clients see the connection drop, as with a real broker
        if broker is not None:
            with contextlib.suppress(Exception):  # bounded; a stall is amqtt's, see above
                async with asyncio.timeout(2.0):
                    await broker.shutdown()
        connections, self._connections = set(self._connections), set()
        for task in connections:
            task.cancel()
        if connections:
            await asyncio.gather(*connections, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def kill(self) -> None:
        """As :meth:`stop`: every connection is cut without a goodbye either way."""
        await self.stop()

    async def restart(self) -> None:
        await self.stop()
        await self.start()


RunningBroker = MosquittoBroker | EmbeddedBroker


@contextlib.asynccontextmanager
async def local_broker(prefer_mosquitto: bool = True) -> AsyncIterator[RunningBroker]:
    """A Mosquitto on a free port if the binary exists (and is preferred), else amqtt."""
    broker: RunningBroker
    if prefer_mosquitto and find_mosquitto() is not None:
        broker = MosquittoBroker()
    else:
        broker = EmbeddedBroker()
    async with broker:
        yield broker
