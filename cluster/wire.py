"""Job, failed-entry and working-on encoding, byte-compatible with node-resque.

node-resque writes `JSON.stringify({class, queue, args})`. Python's `json.dumps` differs from
`JSON.stringify` in spacing, non-ASCII escaping and number spelling (`1.0` vs `1`, `1e-07` vs
`1e-7`, `1e-05` vs `0.00001`), so `encode_job` writes numbers the JavaScript way and rejects what
JavaScript cannot round-trip (NaN, infinities, integers beyond 2**53). Decoders accept any key
order (Ruby resque writes `{class, args}`); whatever is read back keeps its raw bytes so removal
by LREM stays byte-exact.

Example: ``encode_job("sayHello", "default", [{}]) == '{"class":"sayHello","queue":"default","args":[{}]}'``
"""

from __future__ import annotations

import functools
import json
import time as _time
from dataclasses import dataclass, field
from typing import Any

from .errors import EnqueueError, JobDecodeError

MAX_SAFE_INT = 2**53 - 1
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_dumps = _ENCODER.encode
# The C encoder behind `_dumps`, made once (`encode` builds a new one, and a closure, per call).
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_c_encode = (_c_make_encoder(None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False,
                             False) if _c_make_encoder is not None else None)


def _dumps_checked(obj: Any) -> str:
    """`_dumps` for data `_needs_js_path` has walked (no cycle, so no circular-reference markers)."""
    if _c_encode is None:  # pragma: no cover - a Python without the C accelerator
        return _dumps(obj)
    return "".join(_c_encode(obj, 0))


def js_number(x: float) -> str:
    """Spell a float as JavaScript's Number.prototype.toString does."""
    if x != x or x in (float("inf"), float("-inf")):
        raise EnqueueError(f"number {x!r} cannot be encoded as JSON")
    if x == 0:
        return "0"
    if x.is_integer() and abs(x) <= MAX_SAFE_INT:
        return str(int(x))
    from decimal import Decimal  # here: only fractions need it, and the leader process never encodes one

    sign, digit_tuple, exp = Decimal(repr(x)).as_tuple()
    assert isinstance(exp, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    exp += len("".join(map(str, digit_tuple))) - len(digits)
    k = len(digits)
    n = exp + k
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mant = digits if k == 1 else digits[0] + "." + digits[1:]
        out = f"{mant}e{'+' if e > 0 else '-'}{abs(e)}"
    return ("-" if sign else "") + out


def _has_surrogate(s: str) -> bool:
    """A lone surrogate (JS escapes it; UTF-8 cannot encode it): found at C speed."""
    if s.isascii():
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _js_string(s: str) -> str:
    out = _dumps(s)
    if _has_surrogate(s):  # lone surrogates: JS escapes them
        out = "".join(f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c for c in out)
    return out


def _is_index(key: str) -> bool:
    """JS orders array-index keys ('0'..'4294967294', canonical) before the others, ascending."""
    return key.isascii() and key.isdigit() and (key == "0" or key[0] != "0") and int(key) < 4294967295


def _needs_js_path(obj: Any, depth: int = 0, strict: bool = True) -> bool:
    """Whether `json` would spell `obj` differently from JSON.stringify; raises EnqueueError for
    what is not JSON. Every value is checked (no early exit), so bad data is always refused.
    Exact types are dispatched first: enqueue calls this for every job."""
    if depth > 200:
        raise EnqueueError("params are nested more than 200 levels deep")
    t = type(obj)
    if t is str:
        return _has_surrogate(obj)
    if t is dict:
        needs = False
        for k, v in obj.items():
            if type(k) is not str and not isinstance(k, str):
                raise EnqueueError(f"object key {k!r} is not a string")
            if ("0" <= k[:1] <= "9" and _is_index(k)) or _has_surrogate(k):
                needs = True
            if _needs_js_path(v, depth + 1, strict):
                needs = True
        return needs
    if t is list or t is tuple:
        needs = False
        for v in obj:
            if _needs_js_path(v, depth + 1, strict):
                needs = True
        return needs
    if t is int:
        if -MAX_SAFE_INT <= obj <= MAX_SAFE_INT:
            return False
    elif t is bool or obj is None:
        return False
    return _needs_js_path_slow(obj, depth, strict)


def _needs_js_path_slow(obj: Any, depth: int, strict: bool) -> bool:
    """Floats, big integers and subclasses (StrEnum, IntEnum, OrderedDict, ...)."""
    if isinstance(obj, float):
        return True
    if isinstance(obj, bool) or obj is None:
        return False
    if isinstance(obj, int):
        if abs(obj) > MAX_SAFE_INT:
            if strict:
                raise EnqueueError(f"integer {obj} is beyond 2**53 and would lose precision in JavaScript")
            return True
        return False
    if isinstance(obj, str):
        return _has_surrogate(obj)
    if isinstance(obj, dict):
        return _needs_js_path(dict(obj), depth, strict)
    if isinstance(obj, list | tuple):
        return _needs_js_path(list(obj), depth, strict)
    raise EnqueueError(f"value of type {type(obj).__name__} is not JSON")


def _js_dumps(obj: Any) -> str:
    if isinstance(obj, bool) or obj is None:
        return _dumps(obj)
    if isinstance(obj, float):
        return js_number(obj)
    if isinstance(obj, int):
        # beyond 2**53 JavaScript holds the nearest double: write what JSON.stringify would
        return str(obj) if abs(obj) <= MAX_SAFE_INT else js_number(float(obj))
    if isinstance(obj, str):
        return _js_string(obj)
    if isinstance(obj, dict):
        items = list(obj.items())
        if any(_is_index(k) for k, _ in items):
            items = sorted((kv for kv in items if _is_index(kv[0])), key=lambda kv: int(kv[0])) + [
                kv for kv in items if not _is_index(kv[0])]
        return "{" + ",".join(f"{_js_string(k)}:{_js_dumps(v)}" for k, v in items) + "}"
    return "[" + ",".join(_js_dumps(v) for v in obj) + "]"


def js_dumps(obj: Any, strict: bool = True) -> str:
    """`JSON.stringify(obj)` for JSON-shaped Python data; raises EnqueueError otherwise.

    `strict=False` re-serialises data read back (another producer's integers beyond 2**53 are
    written as they are instead of refused)."""
    if _needs_js_path(obj, 0, strict):
        return _js_dumps(obj)
    return _dumps_checked(obj)


def encode_job(task: str, queue: str, args: list[Any], strict: bool = True) -> str:
    """The exact bytes node-resque's `encode` writes for this job (`strict=False`: args read back)."""
    if not isinstance(task, str) or not task:
        raise EnqueueError(f"task name must be a non-empty string, got {task!r}")
    if not isinstance(queue, str):
        check_queue_name(queue)  # raises, naming the bad queue
    return _job_head(task, queue) + js_dumps(args, strict) + "}"


@functools.lru_cache(maxsize=1024)
def _job_head(task: str, queue: str) -> str:
    """'{"class":…,"queue":…,"args":' for one task and queue, checked once (a hot path)."""
    check_queue_name(queue)
    return '{"class":' + js_dumps(task) + ',"queue":' + js_dumps(queue) + ',"args":'


def check_queue_name(queue: str) -> None:
    if not isinstance(queue, str) or not queue or len(queue) > 200:
        raise EnqueueError(f"queue name must be a non-empty string of at most 200 characters, got {queue!r}")
    if any(c in queue for c in ",:* \r\n\t"):
        raise EnqueueError(f"queue name {queue!r} must not contain ',', ':', '*' or whitespace")


@dataclass(frozen=True)
class Job:
    """A decoded queue entry. `raw` is the exact string read from Redis."""

    task: str
    queue: str | None
    args: list[Any]
    raw: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, Any]:
        """actionhero convention: args = [params]. Other shapes give {}; the task sees `args`."""
        if len(self.args) == 1 and isinstance(self.args[0], dict):
            return self.args[0]
        return {}


def decode_job(raw: str | bytes) -> Job:
    if isinstance(raw, bytes):
        data = raw
        try:
            raw = data.decode()
        except UnicodeDecodeError as e:
            raise JobDecodeError(data.decode(errors="replace"), "not UTF-8") from e
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise JobDecodeError(raw, f"invalid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise JobDecodeError(raw, f"expected a JSON object, got {type(obj).__name__}")
    task = obj.get("class")
    if not isinstance(task, str) or not task:
        raise JobDecodeError(raw, "missing or non-string 'class'")
    args = obj.get("args", [])
    if args is None:
        args = []
    if not isinstance(args, list):
        raise JobDecodeError(raw, f"'args' must be a list, got {type(args).__name__}")
    queue = obj.get("queue")
    if queue is not None and not isinstance(queue, str):
        raise JobDecodeError(raw, "'queue' must be a string")
    extra = {k: v for k, v in obj.items() if k not in ("class", "queue", "args")}
    return Job(task=task, queue=queue, args=args, raw=raw, extra=extra)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def js_date(epoch: float) -> str:
    """JavaScript `Date.toString()` in UTC, as node-resque writes `failed_at` and `run_at`."""
    return _js_date_second(int(epoch // 1))


@functools.lru_cache(maxsize=4)
def _js_date_second(epoch: int) -> str:
    t = _time.gmtime(epoch)
    return (
        f"{_DAYS[t.tm_wday]} {_MONTHS[t.tm_mon - 1]} {t.tm_mday:02d} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT+0000 (Coordinated Universal Time)"
    )


def parse_date(value: Any) -> float | None:
    """Epoch seconds from a JS Date string, an ISO-8601 / Ruby string or epoch seconds; None if unknown."""
    import datetime as dt

    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        return None
    s = value.strip()
    try:
        return float(s)
    except ValueError:
        pass
    for fmt in ("%a %b %d %Y %H:%M:%S GMT%z", "%Y/%m/%d %H:%M:%S %Z", "%Y-%m-%d %H:%M:%S %z"):
        try:
            part = s.split(" (")[0] if fmt.startswith("%a") else s
            d = dt.datetime.strptime(part, fmt)
            if d.tzinfo is None:
                d = d.replace(tzinfo=dt.UTC)
            return d.timestamp()
        except ValueError:
            continue
    try:
        d = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
        if d.tzinfo is None:
            d = d.replace(tzinfo=dt.UTC)
        return d.timestamp()
    except ValueError:
        return None


def encode_failed(
    *, worker: str, queue: str, payload_raw: str, exception: str, error: str,
    backtrace: list[str] | None, failed_at: float,
) -> str:
    """A failed entry in node-resque's key order. `payload` is the parsed job (raw if unparseable)."""
    try:
        payload: Any = json.loads(payload_raw)
    except (ValueError, RecursionError):
        payload = payload_raw
    entry = {
        "worker": worker,
        "queue": queue,
        "payload": payload,
        "exception": exception,
        "error": error,
        "backtrace": backtrace,
        "failed_at": js_date(failed_at),
    }
    try:
        return js_dumps(entry, strict=False)
    except Exception:
        # the job holds what JSON cannot spell (NaN, Infinity) or nests deeper than we encode: keep its raw text
        entry["payload"] = payload_raw
        return js_dumps(entry, strict=False)


@dataclass(frozen=True)
class FailedEntry:
    """A decoded failed entry; `raw` keeps the stored bytes for byte-exact removal."""

    worker: str | None
    queue: str | None
    payload: Any
    exception: str | None
    error: str | None
    backtrace: Any
    failed_at: float | None
    raw: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker": self.worker, "queue": self.queue, "payload": self.payload,
            "exception": self.exception, "error": self.error, "backtrace": self.backtrace,
            "failed_at": self.failed_at, "raw": self.raw,
        }


def decode_failed(raw: str) -> FailedEntry:
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = {}
    if not isinstance(obj, dict):
        obj = {}
    return FailedEntry(
        worker=obj.get("worker"), queue=obj.get("queue"), payload=obj.get("payload"),
        exception=obj.get("exception"), error=obj.get("error"), backtrace=obj.get("backtrace"),
        failed_at=parse_date(obj.get("failed_at")), raw=raw,
    )
