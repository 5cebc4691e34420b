"""ed25519 keypairs and signature verification (PyNaCl / libsodium).

Verification is strict: libsodium rejects non-canonical signatures and small-order keys, so a
signature cannot be altered into another valid one for the same message.
"""

from __future__ import annotations

from functools import lru_cache

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

PUBKEY_LEN = 32
SIGNATURE_LEN = 64
SEED_LEN = 32


class Keypair:
    """An ed25519 signing key. ``pubkey`` is the 32-byte public key used as an address."""

    __slots__ = ("_signing_key", "pubkey")

    def __init__(self, signing_key: SigningKey) -> None:
        self._signing_key = signing_key
        self.pubkey: bytes = bytes(signing_key.verify_key)

    @classmethod
    def generate(cls) -> Keypair:
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Keypair:
        if len(seed) != SEED_LEN:
            raise ValueError(f"seed must be {SEED_LEN} bytes, got {len(seed)}")
        return cls(SigningKey(seed))

    @property
    def seed(self) -> bytes:
        return bytes(self._signing_key)

    def sign(self, message: bytes) -> bytes:
        return bytes(self._signing_key.sign(message).signature)

    def __repr__(self) -> str:
        return f"Keypair({self.pubkey.hex()[:16]}..)"


@lru_cache(maxsize=65_536)
def _verify_key(pubkey: bytes) -> VerifyKey:
    return VerifyKey(pubkey)


def verify_signature(pubkey: bytes, message: bytes, signature: bytes) -> bool:
    """True iff ``signature`` is ``pubkey``'s valid ed25519 signature of ``message``."""
    if len(pubkey) != PUBKEY_LEN or len(signature) != SIGNATURE_LEN:
        return False
    try:
        _verify_key(pubkey).verify(message, signature)
    except (BadSignatureError, CryptoError, ValueError):
        return False
    return True
