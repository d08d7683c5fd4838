"""redis-py's exception classes, for every Corral module, and the error replies mapped onto them.

Corral catches redis-py's classes everywhere (a Redis client of either kind, redis-py's or the
RESP clients of `cluster/rawconn.py` and `cluster/resp.py`, raises the same ones), so they come
from this one module. In the leader process `cluster/lean_imports.py` has loaded the one file
`redis/exceptions.py` before this import, without the rest of redis-py.
"""

from __future__ import annotations

from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ConnectionError,
    ExecAbortError,
    MasterDownError,
    MaxClientsReachedError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TimeoutError,
)

# Error replies by their first word, as redis-py's parser maps them (the rest are ResponseError).
_BY_CODE: dict[str, type[ResponseError] | type[RedisError]] = {
    "OOM": OutOfMemoryError, "WRONGPASS": AuthenticationError, "NOAUTH": AuthenticationError,
    "EXECABORT": ExecAbortError, "LOADING": BusyLoadingError, "NOSCRIPT": NoScriptError,
    "READONLY": ReadOnlyError, "NOPERM": NoPermissionError, "MASTERDOWN": MasterDownError,
}
# The code word of each class that has exactly one: logs show a reply with its code
# (`OutOfMemoryError: OOM command not allowed ...`), which the class's text has dropped.
CODE_OF: dict[type, str] = {cls: code for code, cls in _BY_CODE.items()
                            if list(_BY_CODE.values()).count(cls) == 1}
_ERR_TEXTS: dict[str, type[RedisError]] = {
    "max number of clients reached": MaxClientsReachedError, "invalid password": AuthenticationError,
    "Client sent AUTH, but no password is set": AuthenticationError,
}


def reply_error(message: str) -> RedisError:
    """The exception for an error reply, with redis-py's class and text (the code word dropped
    for the codes it knows)."""
    code, _, rest = message.partition(" ")
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls(rest)
    if code == "ERR":
        return _ERR_TEXTS.get(rest, ResponseError)(rest)
    return ResponseError(message)


__all__ = [
    "CODE_OF", "AuthenticationError", "BusyLoadingError", "ConnectionError", "ExecAbortError", "MasterDownError",
    "NoPermissionError",
    "NoScriptError", "OutOfMemoryError", "ReadOnlyError", "RedisError", "ResponseError", "TimeoutError",
    "reply_error",
]
