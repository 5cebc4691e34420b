"""What the users stream costs: the account codec, the node's cut, its pages, the feed's load.

    python -m benchmarks.users_feed [--users 100000] [--changed 2000] [--repeat 7]

Users are built directly as protocol state (no transactions): a USDC deposit, a SOL-PERP
position and, for one in ten, three open orders. Each figure is the best of ``--repeat`` runs
in one process:

* **codec**: one account (a perp, a spot position, three orders) encoded and decoded by
  :mod:`keepers.accounts_json` (the node's one-account reads: hex keys, a Python field walk) and
  by msgspec's own dataclass codec (what :class:`~keepers.bus.schemas.UsersMessage` and
  ``/v1/users`` carry);
* **cut, nothing changed** / **cut, N changed**: :class:`keepers.node_users.UserCutter` over
  every account (the identity scan the node runs once per slot with a journaled transaction),
  and the encoding of the changed accounts into messages (:class:`~keepers.node_users.UsersStream`);
* **page**: one ``/v1/users`` page of 1,000 accounts encoded at the node and decoded by the
  client's :class:`keepers.rpc.UsersPage`; **load**: every page, both sides.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import msgspec

from keepers.accounts_json import decode_account, encode_account
from keepers.node_users import UserCutter, UsersStream
from keepers.rpc import UsersPage
from protocol.constants import BASE_PRECISION, PRICE_PRECISION, QUOTE_PRECISION
from protocol.state.user import Order, PerpPosition, SpotPosition, User, UserKey
from protocol.types import MarketType, OrderType, PositionDirection

PAGE = 1_000


def make_user(n: int, rng: random.Random) -> User:
    base = rng.randint(1, 500) * BASE_PRECISION // 10 * rng.choice((1, -1))
    orders = [
        Order(
            order_id=i,
            market_index=0,
            market_type=MarketType.Perp,
            order_type=OrderType.Limit,
            direction=PositionDirection.Long,
            base_asset_amount=BASE_PRECISION,
            slot=100,
            price=(140 + i) * PRICE_PRECISION,
        )
        for i in range(3 if n % 10 == 0 else 0)
    ]
    return User(
        authority=n.to_bytes(32, "big"),
        spot_positions=[SpotPosition(0, scaled_balance=rng.randint(1, 10**6) * 10**9)],
        perp_positions=[
            PerpPosition(0, base_asset_amount=base, quote_asset_amount=-base * 150 // 1_000)
        ],
        orders=orders,
        total_deposits=10_000 * QUOTE_PRECISION,
    )


def best(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--changed", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    users: dict[UserKey, User] = {}
    for n in range(args.users):
        account = make_user(n, rng)
        users[account.key] = account
    repeat = args.repeat
    rows: list[tuple[str, str]] = []

    sample = make_user(0, rng)  # one with three orders
    encoder, decoder = msgspec.json.Encoder(), msgspec.json.Decoder(User)
    raw_json, raw_native = encode_account(sample), encoder.encode(sample)
    assert decode_account(User, raw_json) == sample == decoder.decode(raw_native)
    n = 2_000
    for label, run in (
        ("codec: accounts_json encode", lambda: [encode_account(sample) for _ in range(n)]),
        ("codec: accounts_json decode", lambda: [decode_account(User, raw_json) for _ in range(n)]),
        ("codec: msgspec encode", lambda: [encoder.encode(sample) for _ in range(n)]),
        ("codec: msgspec decode", lambda: [decoder.decode(raw_native) for _ in range(n)]),
    ):
        rows.append((label, f"{best(repeat, run) / n * 1e6:8.1f} us/account"))
    rows.append(("codec: sizes", f"{len(raw_json)} B (accounts_json), {len(raw_native)} B"))

    cutter = UserCutter(users)
    rows.append(("cut, nothing changed", f"{best(repeat, cutter.cut) * 1e3:8.2f} ms"))
    stream = UsersStream(lambda: users, "bench")
    keys = rng.sample(list(users), args.changed)

    def change_and_cut() -> float:
        for key in keys:
            users[key] = users[key].clone()
        started = time.perf_counter()
        stream.cut(1)
        return time.perf_counter() - started

    cut = min(change_and_cut() for _ in range(repeat))
    rows.append((f"cut, {args.changed} changed (scan + encode)", f"{cut * 1e3:8.2f} ms"))

    page_decoder = msgspec.json.Decoder(UsersPage)
    body = stream.page(0, PAGE, 1)
    rows.append(
        (
            f"page of {PAGE}: node encodes",
            f"{best(repeat, lambda: stream.page(0, PAGE, 1)) * 1e3:8.2f} ms",
        )
    )
    rows.append(
        (
            f"page of {PAGE}: client decodes",
            f"{best(repeat, lambda: page_decoder.decode(body)) * 1e3:8.2f} ms",
        )
    )

    def load() -> None:
        offset: int | None = 0
        while offset is not None:
            offset = page_decoder.decode(stream.page(offset, PAGE, 1)).next

    rows.append(
        (f"load of {args.users} accounts, both sides", f"{best(min(repeat, 3), load):8.2f} s")
    )

    width = max(len(label) for label, _ in rows)
    print(f"users: {args.users}, best of {repeat}")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main()
