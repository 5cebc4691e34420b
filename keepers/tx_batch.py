"""The framing of ``POST /v1/txs``: many signed transactions in one request body.

Body (content type ``application/octet-stream``)::

    batch = (length:u32 little-endian | transaction[length]) * count

``transaction`` is exactly what ``POST /v1/tx`` takes (the wire bytes of
:mod:`protocol.transaction`); nothing precedes or follows the frames. Limits: ``1 <= count <=``
:data:`MAX_BATCH_TXS`, every ``length`` from 1 to :data:`MAX_TX_BYTES` (``/v1/tx``'s body limit),
the whole body at most :data:`MAX_BATCH_BYTES`. :func:`split_batch` refuses anything else with a
:class:`BatchError` naming the problem (the frame, its byte offset, the limit passed); the node
answers it with the error's ``status`` (413 past a limit, 400 for broken framing) and executes
none of the batch. :func:`join_batch` is the client side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_TXS",
    "MAX_TX_BYTES",
    "BatchError",
    "join_batch",
    "split_batch",
]

MAX_TX_BYTES: Final = 512 * 1024  # > the largest valid transaction (64 x 4 KiB instructions)
MAX_BATCH_TXS: Final = 1_024
MAX_BATCH_BYTES: Final = 4 * 1024 * 1024
_LENGTH: Final = 4


class BatchError(ValueError):
    """A batch body the node refuses as a whole: ``status`` 413 (a limit) or 400 (framing)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def join_batch(txs: Sequence[bytes]) -> bytes:
    """The ``/v1/txs`` body carrying ``txs`` in order (checked against the limits)."""
    if not 1 <= len(txs) <= MAX_BATCH_TXS:
        raise BatchError(413, f"a batch holds 1 to {MAX_BATCH_TXS} transactions, not {len(txs)}")
    parts: list[bytes] = []
    for i, tx in enumerate(txs):
        if not 1 <= len(tx) <= MAX_TX_BYTES:
            raise BatchError(413, f"transaction {i} is {len(tx)} bytes (1 to {MAX_TX_BYTES})")
        parts.append(len(tx).to_bytes(_LENGTH, "little"))
        parts.append(tx)
    body = b"".join(parts)
    if len(body) > MAX_BATCH_BYTES:
        raise BatchError(413, f"batch body of {len(body)} bytes exceeds {MAX_BATCH_BYTES}")
    return body


def split_batch(body: bytes) -> list[bytes]:
    """The transactions framed in ``body``, in order; :class:`BatchError` if the framing is
    broken or a limit is passed (checked before anything is copied out)."""
    size = len(body)
    if size > MAX_BATCH_BYTES:
        raise BatchError(413, f"batch body of {size} bytes exceeds the limit of {MAX_BATCH_BYTES}")
    if not size:
        raise BatchError(400, "empty batch: at least one transaction frame is required")
    bounds: list[tuple[int, int]] = []
    off = 0
    while off < size:
        index = len(bounds)
        if index == MAX_BATCH_TXS:
            raise BatchError(
                413, f"more than the limit of {MAX_BATCH_TXS} transactions in one batch"
            )
        if off + _LENGTH > size:
            raise BatchError(
                400, f"frame {index} at byte {off}: {size - off} bytes, too short for a length"
            )
        length = int.from_bytes(body[off : off + _LENGTH], "little")
        start = off + _LENGTH
        if length > MAX_TX_BYTES:
            raise BatchError(
                413,
                f"frame {index} at byte {off}: length {length} exceeds the limit of "
                f"{MAX_TX_BYTES} bytes per transaction",
            )
        if not length:
            raise BatchError(400, f"frame {index} at byte {off}: length 0 (an empty frame)")
        if start + length > size:
            raise BatchError(
                400,
                f"frame {index} at byte {off}: length {length} runs past the end of the body "
                f"({size - start} bytes left)",
            )
        bounds.append((start, start + length))
        off = start + length
    return [body[start:end] for start, end in bounds]
