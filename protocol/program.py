"""The program: verifies, executes and commits transactions against the account state.

``Program.execute(tx, clock)``:

1. checks every signature against the canonical message (:func:`verify_transaction`);
2. rejects a transaction whose ``recent_slot`` is outside ``[slot - max_age, slot]``
   (``StaleTransaction``) or whose id (first signature) was already executed within that
   window (``DuplicateTransaction``);
3. runs the instructions in order against one copy-on-write :class:`Accounts` view;
4. commits all of it, or — on the first :class:`ProtocolError` — nothing.

It returns :class:`Executed` with the emitted records numbered by a gap-free sequence, or
:class:`Rejected`. State after a rejection is identical to state before it, because nothing
is written until commit. ``simulate`` runs steps 1-3 and never commits or consumes the id or a
sequence number.

``execute_verified`` / ``simulate_verified`` start at step 2 with a :class:`VerifiedTransaction`
that :func:`verify_transaction` already produced (a node checks signatures on worker threads,
off its sequencer). Only step 1 moves: freshness and replay depend on the program's state at
execution and are always checked here.

Invariants: ``next_seq`` only grows, by exactly the number of records committed; the replay
window only forgets an id once no transaction carrying it could be fresh again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import protocol.instructions  # noqa: F401  -- registers every instruction handler
from protocol.accounts import Accounts, ProgramState
from protocol.clock import Clock
from protocol.error_codes import ErrorCode
from protocol.errors import InvalidParameter, ProtocolError, Rejected
from protocol.instructions.registry import HANDLERS
from protocol.records import SequencedRecord
from protocol.transaction import (
    Transaction,
    VerifiedTransaction,
    parse_transaction,
    verify_transaction,
)


@dataclass(frozen=True, slots=True)
class Executed:
    """A committed (or, from ``simulate``, committable) transaction and its records."""

    signature: bytes
    slot: int
    records: tuple[SequencedRecord, ...]

    def __bool__(self) -> bool:
        return True


Result = Executed | Rejected


class Program:
    __slots__ = ("_next_seq", "_oldest_recent_slot", "_recent_by_slot", "_recent_ids", "_state")

    def __init__(self, genesis: ProgramState, *, next_seq: int = 1) -> None:
        self._state = genesis
        self._next_seq = next_seq
        self._recent_ids: set[bytes] = set()
        self._recent_by_slot: dict[int, list[bytes]] = {}
        # the smallest key of _recent_by_slot (None: empty), so that a transaction only scans
        # the window when something in it has gone stale
        self._oldest_recent_slot: int | None = None

    @property
    def state(self) -> ProgramState:
        """The committed account state. Read it; never mutate it."""
        return self._state

    @property
    def next_seq(self) -> int:
        return self._next_seq

    # --- entry points ------------------------------------------------------------------------
    def execute(self, tx: Transaction, clock: Clock) -> Result:
        return self._run(tx, clock, commit=True)

    def simulate(self, tx: Transaction, clock: Clock) -> Result:
        return self._run(tx, clock, commit=False)

    def execute_verified(self, verified: VerifiedTransaction, clock: Clock) -> Result:
        """:meth:`execute` for a transaction whose signatures are already verified."""
        return self._run_verified(verified, clock, commit=True)

    def simulate_verified(self, verified: VerifiedTransaction, clock: Clock) -> Result:
        """:meth:`simulate` for a transaction whose signatures are already verified."""
        return self._run_verified(verified, clock, commit=False)

    def execute_bytes(self, raw: bytes, clock: Clock) -> Result:
        """Parse wire bytes and execute; malformed bytes are a :class:`Rejected`, not a crash."""
        try:
            tx = parse_transaction(raw)
        except ProtocolError as exc:
            return exc.to_rejected()
        return self.execute(tx, clock)

    # --- internals ---------------------------------------------------------------------------
    def _run(self, tx: Transaction, clock: Clock, *, commit: bool) -> Result:
        try:
            verified = verify_transaction(tx)
        except ProtocolError as exc:
            return exc.to_rejected()
        return self._run_verified(verified, clock, commit=commit)

    def _run_verified(self, verified: VerifiedTransaction, clock: Clock, *, commit: bool) -> Result:
        try:
            self._check_fresh(verified, clock)
            accounts = self._apply(verified, clock)
        except ProtocolError as exc:
            return exc.to_rejected()
        if not commit:
            seqs = range(self._next_seq, self._next_seq + len(accounts.records))
            return Executed(
                verified.signature,
                clock.slot,
                tuple(
                    SequencedRecord(s, clock.slot, r)
                    for s, r in zip(seqs, accounts.records, strict=True)
                ),
            )
        accounts.commit()
        self._remember(verified)
        records = []
        for record in accounts.records:
            records.append(SequencedRecord(self._next_seq, clock.slot, record))
            self._next_seq += 1
        return Executed(verified.signature, clock.slot, tuple(records))

    def _apply(self, verified: VerifiedTransaction, clock: Clock) -> Accounts:
        accounts = Accounts(self._state, clock, verified.signers)
        for i, ix in enumerate(verified.transaction.instructions):
            run: Callable[[Accounts, object], None] | None = HANDLERS.get(type(ix))
            if run is None:
                raise InvalidParameter(
                    f"instructions[{i}]",
                    f"no handler for {type(ix).__name__}",
                    ErrorCode.UnknownInstruction,
                )
            run(accounts, ix)
        return accounts

    def _check_fresh(self, verified: VerifiedTransaction, clock: Clock) -> None:
        max_age = self._state.state.max_transaction_age_slots
        recent = verified.transaction.recent_slot
        if recent > clock.slot:
            raise ProtocolError(
                ErrorCode.StaleTransaction,
                f"recent_slot {recent} is ahead of slot {clock.slot}",
                field="recent_slot",
            )
        if clock.slot - recent > max_age:
            raise ProtocolError(
                ErrorCode.StaleTransaction,
                f"recent_slot {recent} is older than {max_age} slots",
                field="recent_slot",
            )
        self._forget_before(clock.slot - max_age)
        if verified.signature in self._recent_ids:
            raise ProtocolError(
                ErrorCode.DuplicateTransaction, "already executed", field="signatures[0]"
            )

    def remember(self, signature: bytes, recent_slot: int) -> None:
        """Put an already-committed transaction id into the replay window without executing it.

        For a restart from a snapshot: a transaction committed before the snapshot whose
        ``recent_slot`` is still fresh must stay a ``DuplicateTransaction``, and the snapshot
        holds accounts, not the window. Ids already remembered are left as they are.
        """
        if signature in self._recent_ids:
            return
        self._recent_ids.add(signature)
        self._recent_by_slot.setdefault(recent_slot, []).append(signature)
        oldest = self._oldest_recent_slot
        if oldest is None or recent_slot < oldest:
            self._oldest_recent_slot = recent_slot

    def _remember(self, verified: VerifiedTransaction) -> None:
        self.remember(verified.signature, verified.transaction.recent_slot)

    def _forget_before(self, oldest_fresh_slot: int) -> None:
        # An id can only be replayed while its recent_slot is still fresh; older ones can go.
        oldest = self._oldest_recent_slot
        if oldest is None or oldest >= oldest_fresh_slot:
            return  # nothing is stale
        stale = [s for s in self._recent_by_slot if s < oldest_fresh_slot]
        for s in stale:
            for sig in self._recent_by_slot.pop(s):
                self._recent_ids.discard(sig)
        self._oldest_recent_slot = min(self._recent_by_slot, default=None)
