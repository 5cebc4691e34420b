"""msgspec JSON against msgpack for the bus's payloads: encode + decode of an order event.

``python -m benchmarks.bus_codec [--events N] [--repeat R]``

Prints microseconds per encode, per decode (into the tagged union, as the bus decodes) and
the payload size for each format over the same ``N`` order events (those of
``benchmarks.mqtt_transports``). The bus uses JSON: see :mod:`keepers.bus.schemas` for why.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from benchmarks.mqtt_transports import order_events
from keepers.bus import schemas


def _best_us(fn: Callable[[], object], count: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / count * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    messages = [schemas.decode(t, p) for t, p in order_events(args.events)]
    json_enc = msgspec.json.Encoder()
    json_dec = msgspec.json.Decoder(schemas.Message)
    pack_enc = msgspec.msgpack.Encoder()
    pack_dec = msgspec.msgpack.Decoder(schemas.Message)
    formats: list[tuple[str, Callable[[Any], bytes], Callable[[bytes], Any]]] = [
        ("json", json_enc.encode, json_dec.decode),
        ("msgpack", pack_enc.encode, pack_dec.decode),
    ]
    rows = []
    for name, enc, dec in formats:
        payloads = [enc(m) for m in messages]
        if [dec(p) for p in payloads] != messages:
            raise AssertionError(f"{name} does not round-trip")

        def encode_all(enc: Callable[[Any], bytes] = enc) -> object:
            return [enc(m) for m in messages]

        def decode_all(
            dec: Callable[[bytes], Any] = dec, payloads: list[bytes] = payloads
        ) -> object:
            return [dec(p) for p in payloads]

        encode_us = _best_us(encode_all, len(messages), args.repeat)
        decode_us = _best_us(decode_all, len(messages), args.repeat)
        size = sum(map(len, payloads)) / len(payloads)
        rows.append((name, encode_us, decode_us, size))
    print(f"{'format':<8} {'encode us':>10} {'decode us':>10} {'round trip us':>14} {'bytes':>7}")
    for name, encode_us, decode_us, size in rows:
        total = encode_us + decode_us
        print(f"{name:<8} {encode_us:>10.2f} {decode_us:>10.2f} {total:>14.2f} {size:>7.0f}")


if __name__ == "__main__":
    main()
