"""A verify worker process: checks transactions' signatures for the node, off its interpreter.

``python -m keepers.verify_worker`` (started by :class:`keepers.verify_pool.ProcessVerifyPool`;
not a command for people). It reads batches on stdin and answers each on stdout, in order,
until stdin closes. Frames both ways are ``length:u32 (little-endian) | msgpack payload``:

* request: a list of transactions' wire bytes;
* answer: one item per transaction, in order: ``None`` (every signature checks) or
  ``[code, detail, field]`` of the rejection (:func:`protocol.envelope.check_envelope`).

It imports only :mod:`protocol.envelope` and libsodium, so it starts in a fraction of the
time the protocol package takes. A verdict is the same as
``verify_transaction(parse_transaction(raw))`` would give for bytes the parser accepts (the
node only sends such). SIGINT is ignored: the node stops its workers by closing their stdin.
"""

from __future__ import annotations

import signal
import sys
from typing import BinaryIO, Final

import msgspec

from protocol.envelope import check_envelope
from protocol.errors import ProtocolError

__all__ = ["HEADER", "Verdict", "main", "verify_frame"]

HEADER: Final = 4  # bytes of the little-endian u32 length in front of every frame

Verdict = tuple[int, str, str | None] | None

_decoder: Final = msgspec.msgpack.Decoder(list[bytes])
_encoder: Final = msgspec.msgpack.Encoder()


def verify_frame(payload: bytes) -> bytes:
    """One request payload in, its answer payload out."""
    verdicts: list[Verdict] = []
    for raw in _decoder.decode(payload):
        try:
            check_envelope(raw)
        except ProtocolError as exc:
            verdicts.append((int(exc.code), exc.detail, exc.field))
        else:
            verdicts.append(None)
    return _encoder.encode(verdicts)


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer every request frame until ``requests`` ends."""
    while True:
        header = _read_exactly(requests, HEADER)
        if header is None:
            return
        payload = _read_exactly(requests, int.from_bytes(header, "little"))
        if payload is None:
            return
        answer = verify_frame(payload)
        answers.write(len(answer).to_bytes(HEADER, "little") + answer)
        answers.flush()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
