"""SHA-1 in hex, for script names (EVALSHA) and catalogue digests.

CPython's own SHA-1 module, not `hashlib`: hashlib loads OpenSSL's libcrypto, ≈ 3.6 MB of RSS, into
a process that needs no other part of it (the leader process, node/leader/boot.py)."""

from __future__ import annotations

try:
    from _sha1 import sha1 as _sha1  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - another Python
    from hashlib import sha1 as _sha1


def sha1_hex(data: bytes) -> str:
    return str(_sha1(data).hexdigest())
