"""cluster.wire against golden bytes produced by node-resque (docs/ARCHITECTURE.md, house rule 2; docs/INTERFACE.md §5).

`tests/interop/fixtures/golden.json` is the output of `node tests/interop/golden.js`: node-resque's
own `Queue.encode` for a table of tricky jobs, `Date.prototype.toString()` in UTC and in other
zones, and a failed entry built by node-resque's `failurePayload`. `test_fixture_matches_node`
runs the script again (skip without Node locally, fail under CI) so the fixture cannot drift, and
`test_js_dumps_matches_node_on_random_values` compares `js_dumps` with `JSON.stringify` live on
seeded random values.

Regenerate after changing golden.js:

    node tests/interop/golden.js > tests/interop/fixtures/golden.json
"""

from __future__ import annotations

import collections
import enum
import json
import math
import random
import shutil
import struct
import subprocess
from decimal import Decimal
from typing import Any

import pytest

from cluster.errors import EnqueueError, JobDecodeError
from cluster.wire import (
    MAX_SAFE_INT,
    _js_dumps,
    check_queue_name,
    decode_failed,
    decode_job,
    encode_failed,
    encode_job,
    js_date,
    js_dumps,
    js_number,
    parse_date,
)
from tests.support import REPO_ROOT, missing

INTEROP = REPO_ROOT / "tests" / "interop"
FIXTURE = INTEROP / "fixtures" / "golden.json"
GOLDEN: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))

# Known product bugs, kept visible: strict xfail turns into a failure once the product is fixed.
_DIGIT_KEYS_BUG = (
    "cluster/wire.py _is_index uses str.isdigit(), true for non-ASCII digits: '\u00b2' makes int() raise "
    "ValueError (not EnqueueError) and '\u0661' is sorted as the index 1; JS only treats ASCII digits as indexes")
_SURROGATE_KEY_BUG = (
    "cluster/wire.py _needs_js_path never looks for lone surrogates in object keys, so the fast path writes them "
    "raw (not UTF-8 encodable; JSON.stringify writes \\ud800)")
ENCODE_BUGS: dict[str, str] = {}
REENCODE_BUGS: dict[str, str] = {}


def _node_or_missing() -> str:
    node = shutil.which("node")
    if node is None:
        missing("node (Node.js) is not installed")
    if not (INTEROP / "node_modules" / "node-resque" / "package.json").exists():
        missing(f"node-resque is not installed in {INTEROP}")
    return node


def _job_cases(known_bugs: dict[str, str]) -> list[Any]:
    cases = []
    for case in GOLDEN["jobs"]:
        marks = []
        if case["name"] in known_bugs:
            marks.append(pytest.mark.xfail(strict=True, reason=known_bugs[case["name"]]))
        cases.append(pytest.param(case, id=case["name"], marks=marks))
    return cases


# -- golden job bytes ---------------------------------------------------------------------------


def test_fixture_is_complete() -> None:
    names = {c["name"] for c in GOLDEN["jobs"]}
    for must in ("integral floats", "negative zero", "small exponents", "large exponents", "0.1 + 0.2",
                 "safe integers", "non-ASCII", "emoji", "control characters", "slash and quotes",
                 "nested key order", "empty containers", "lone surrogates"):
        assert must in names
    assert GOLDEN["dates"] and GOLDEN["zoned_dates"] and GOLDEN["failed"]


@pytest.mark.parametrize("case", _job_cases(ENCODE_BUGS))
def test_encode_job_reproduces_node_resque_bytes(case: dict[str, Any]) -> None:
    args = json.loads(case["args_source"])
    got = encode_job(case["class"], case["queue"], args)
    assert got == case["bytes"]
    assert got.encode("utf-8") == case["bytes"].encode("utf-8")


def test_golden_inputs_are_python_floats_where_js_differs() -> None:
    """The fixture really exercises the Python/JS differences it claims to."""
    by_name = {c["name"]: (json.loads(c["args_source"]) or [None])[0] for c in GOLDEN["jobs"]}
    assert isinstance(by_name["integral floats"]["a"], float) and json.dumps(by_name["integral floats"]["a"]) == "1.0"
    assert json.dumps(by_name["small exponents"]["a"]) == "1e-07"
    assert math.copysign(1.0, by_name["negative zero"]["a"]) == -1.0
    assert by_name["0.1 + 0.2"]["sum"] == 0.1 + 0.2
    assert by_name["safe integers"]["max"] == 2**53 - 1
    assert by_name["lone surrogates"]["hi"] == "\ud800"


def test_encode_job_from_python_values() -> None:
    """The same bytes from values a Python caller builds by hand (not via json.loads)."""
    golden = {c["name"]: c["bytes"] for c in GOLDEN["jobs"]}
    assert encode_job("t", "default", [{"sum": 0.1 + 0.2, "third": 1 / 3, "x": 4.35, "y": -1.5}]) == golden["0.1 + 0.2"]
    assert encode_job("t", "default", [{"a": -0.0, "b": 0, "c": [-0.0]}]) == golden["negative zero"]
    assert encode_job("t", "default", [{"a": 1.0, "b": -2.0, "c": 100.0, "d": 0.0, "e": 1e2, "f": 12345678.0}]) == \
        golden["integral floats"]
    assert encode_job("sayHello", "default", [{}]) == golden["empty params"]
    # tuples are JSON arrays
    assert encode_job("legacyJob", "default", (1, "two", (3,), {"four": 4}, None, True, False)) == golden["several args"]


@pytest.mark.parametrize("case", _job_cases(REENCODE_BUGS))
def test_reserialising_golden_bytes_is_identity(case: dict[str, Any]) -> None:
    """`JSON.stringify(JSON.parse(x)) == x` holds in Python too: what node-resque's removeFailed relies on."""
    assert js_dumps(json.loads(case["bytes"]), strict=False) == case["bytes"]


@pytest.mark.parametrize("x, js", [
    (1.0, "1"), (-0.0, "0"), (0.0, "0"), (1e-7, "1e-7"), (1e-6, "0.000001"), (1e21, "1e+21"),
    (1e20, "100000000000000000000"),
    (0.1 + 0.2, "0.30000000000000004"), (2.0**53, "9007199254740992"), (2.0**60, "1152921504606847000"),
    (5e-324, "5e-324"), (-1.5e-7, "-1.5e-7"), (123.456, "123.456"), (1.7976931348623157e308, "1.7976931348623157e+308"),
])
def test_js_number(x: float, js: str) -> None:
    assert js_number(x) == js


# -- what JavaScript cannot round-trip ----------------------------------------------------------


@pytest.mark.parametrize("bad, pattern", [
    (float("nan"), r"nan"),
    (float("inf"), r"inf"),
    (float("-inf"), r"-inf"),
    ({"deep": [1, {"x": float("nan")}]}, r"nan"),
    (2**53, r"2\*\*53"),
    (-(2**53), r"2\*\*53"),
    (10**30, r"2\*\*53"),
    ({"n": [2**64]}, r"2\*\*53"),
    ({"f": 1.5, "n": 2**60}, r"2\*\*53"),  # checked even after a float decided the slow path
    ([0.5, {"n": -(2**60)}], r"2\*\*53"),
])
def test_non_round_trippable_numbers_raise(bad: Any, pattern: str) -> None:
    with pytest.raises(EnqueueError, match=pattern):
        encode_job("t", "default", [{"v": bad}])


def test_largest_safe_integers_are_fine() -> None:
    assert encode_job("t", "q", [MAX_SAFE_INT, -MAX_SAFE_INT]) == \
        '{"class":"t","queue":"q","args":[9007199254740991,-9007199254740991]}'


@pytest.mark.parametrize("key", [1, 1.5, None, True, ("a",)])
def test_non_string_keys_raise(key: Any) -> None:
    with pytest.raises(EnqueueError, match="not a string"):
        encode_job("t", "default", [{"ok": 1, "nested": {key: 1}}])


@pytest.mark.parametrize("value", [{1, 2}, b"bytes", object(), Decimal("1.5"), 1j])
def test_non_json_values_raise(value: Any) -> None:
    with pytest.raises(EnqueueError, match="not JSON"):
        encode_job("t", "default", [{"v": value}])


def test_too_deep_raises() -> None:
    v: Any = {}
    for _ in range(300):
        v = {"a": v}
    with pytest.raises(EnqueueError, match="nested"):
        encode_job("t", "default", [v])


@pytest.mark.parametrize("task", ["", None, 5])
def test_bad_task_name_raises(task: Any) -> None:
    with pytest.raises(EnqueueError, match="task name"):
        encode_job(task, "default", [{}])


@pytest.mark.parametrize("queue", ["", "a:b", "a,b", "*", "a b", "tab\there", "new\nline", "x" * 201, None, 3])
def test_bad_queue_name_raises(queue: Any) -> None:
    with pytest.raises(EnqueueError, match="queue name"):
        encode_job("t", queue, [{}])
    with pytest.raises(EnqueueError):
        check_queue_name(queue)


# -- decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, task, queue, args", [
    ('{"class":"X","queue":"q","args":[{"a":1}]}', "X", "q", [{"a": 1}]),  # node-resque
    ('{"class":"X","args":[1,2]}', "X", None, [1, 2]),  # Ruby resque: no queue
    ('{"class":"X","args":[{}],"queue":"q"}', "X", "q", [{}]),  # resque-scheduler delayed entries
    ('{"args":[],"queue":"q","class":"X"}', "X", "q", []),  # any order
    ('{"queue":"q","class":"X"}', "X", "q", []),  # no args
    ('{"class":"X","queue":"q","args":null}', "X", "q", []),
    ('  {"class" : "X" , "args" : [ 1 ] }  ', "X", None, [1]),  # spaced (Ruby's JSON.pretty)
])
def test_decode_job_accepts_every_key_order(raw: str, task: str, queue: str | None, args: list[Any]) -> None:
    job = decode_job(raw)
    assert (job.task, job.queue, job.args) == (task, queue, args)
    assert job.raw == raw  # kept byte for byte, for LREM


def test_decode_job_keeps_extra_keys_and_params() -> None:
    job = decode_job('{"class":"X","args":[{"p":1}],"queue":"q","jid":"abc","enqueued_at":1.5}')
    assert job.extra == {"jid": "abc", "enqueued_at": 1.5}
    assert job.params == {"p": 1}
    assert decode_job('{"class":"X","args":[1,2]}').params == {}


def test_decode_job_bytes_and_golden() -> None:
    for case in GOLDEN["jobs"]:
        job = decode_job(case["bytes"].encode("utf-8"))
        assert job.task == case["class"] and job.queue == case["queue"]
        assert job.raw == case["bytes"]


@pytest.mark.parametrize("raw", [
    "[]", '["class"]', '"a string"', "1", "null", "true", "",
    "{not json", '{"args":[]}', '{"class":5,"args":[]}', '{"class":"","args":[]}', '{"class":"X","args":{}}',
    '{"class":"X","args":"a"}', '{"class":"X","queue":7,"args":[]}',
])
def test_decode_job_rejects(raw: str) -> None:
    with pytest.raises(JobDecodeError) as info:
        decode_job(raw)
    assert info.value.raw == raw


def test_decode_job_rejects_invalid_utf8() -> None:
    with pytest.raises(JobDecodeError, match="UTF-8"):
        decode_job(b'{"class":"X","args":["\xff"]}')


# -- dates --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", GOLDEN["dates"], ids=lambda c: str(c["ms"]))
def test_js_date_matches_node_in_utc(case: dict[str, Any]) -> None:
    assert js_date(case["ms"] / 1000) == case["string"]


@pytest.mark.parametrize("case", GOLDEN["dates"] + GOLDEN["zoned_dates"], ids=lambda c: f'{c.get("zone", "UTC")}-{c["ms"]}')
def test_parse_date_reads_js_strings(case: dict[str, Any]) -> None:
    assert parse_date(case["string"]) == case["ms"] // 1000


def test_js_date_round_trips() -> None:
    for t in (0, 1418421676, 1700000000, 2**31 + 5):
        assert parse_date(js_date(t)) == t
    assert js_date(1700000000.999) == js_date(1700000000)


@pytest.mark.parametrize("value, expected", [
    ("2014/12/12 22:01:16 UTC", 1418421676.0),  # Ruby resque failed_at (%Y/%m/%d %H:%M:%S %Z)
    ("2014/12/12 22:01:16 GMT", 1418421676.0),
    ("2014-12-12T22:01:16Z", 1418421676.0),  # Ruby Time#iso8601 (run_at)
    ("2014-12-12T22:01:16.250Z", 1418421676.25),
    ("2014-12-12T14:01:16-08:00", 1418421676.0),
    ("2014-12-12 14:01:16 -0800", 1418421676.0),  # Ruby Time#to_s
    ("2014-12-12 22:01:16 +0000", 1418421676.0),
    ("2014-12-12T22:01:16", 1418421676.0),  # naive ISO: UTC
    ("Fri Dec 12 2014 14:01:16 GMT-0800", 1418421676.0),  # JS without the zone name
    (1418421676, 1418421676.0),  # pyres: epoch seconds
    (1418421676.5, 1418421676.5),
    ("1418421676", 1418421676.0),
    (" 1418421676.5 ", 1418421676.5),
])
def test_parse_date_reads_ruby_iso_and_epoch(value: Any, expected: float) -> None:
    assert parse_date(value) == expected


@pytest.mark.parametrize("value", ["", "garbage", "yesterday", None, True, [], {}, "Fri Dec 99 2014"])
def test_parse_date_unknown_is_none(value: Any) -> None:
    assert parse_date(value) is None


# -- failed entries -----------------------------------------------------------------------------

FAILED_KEYS = ["worker", "queue", "payload", "exception", "error", "backtrace", "failed_at"]


def _golden_failed_inputs() -> dict[str, Any]:
    return {
        "worker": "host:1234", "queue": "test_queue",
        "payload_raw": encode_job("slowJob", "test_queue", [{"to": "é", "n": 1.5}]),
        "exception": "TypeError", "error": "MyImport is not a function",
        "backtrace": ["    at Worker.perform (/app/worker.js:111:24)", "    at <anonymous>"],
        "failed_at": GOLDEN["failed"]["failed_at_ms"] / 1000,
    }


def test_encode_failed_matches_node_resque_failure_payload() -> None:
    assert encode_failed(**_golden_failed_inputs()) == GOLDEN["failed"]["bytes"]


def test_encode_failed_key_order_and_shapes() -> None:
    raw = encode_failed(worker="w+0", queue="q", payload_raw='{"class":"X","queue":"q","args":[{"f":1.0}]}',
                        exception="ValueError", error="boom", backtrace=None, failed_at=0)
    obj = json.loads(raw)
    assert list(obj) == FAILED_KEYS
    assert obj["payload"] == {"class": "X", "queue": "q", "args": [{"f": 1}]}
    assert '"args":[{"f":1}]' in raw  # re-serialised the JS way, like node-resque's JSON.stringify(job)
    assert obj["backtrace"] is None
    assert obj["failed_at"] == "Thu Jan 01 1970 00:00:00 GMT+0000 (Coordinated Universal Time)"
    assert js_dumps(json.loads(raw)) == raw  # node-resque's removeFailed LREMs JSON.stringify(JSON.parse(raw))


def test_encode_failed_keeps_an_unparseable_payload_as_a_string() -> None:
    obj = json.loads(encode_failed(worker="w", queue="q", payload_raw="not json {", exception="JobDecodeError",
                                   error="bad", backtrace=["a"], failed_at=1))
    assert list(obj) == FAILED_KEYS
    assert obj["payload"] == "not json {"


def test_encode_failed_accepts_payloads_js_cannot_round_trip() -> None:
    payload = '{"class":"rubyJob","queue":"q","args":[12345678901234567890]}'
    raw = encode_failed(worker="w", queue="q", payload_raw=payload, exception="TaskNotFound", error="no task",
                        backtrace=None, failed_at=1)
    obj = json.loads(raw)
    assert list(obj) == FAILED_KEYS
    # written as JSON.stringify(JSON.parse(...)) would, so node-resque's removeFailed finds the entry
    assert '"args":[12345678901234567000]' in raw
    assert obj["payload"]["args"] == [12345678901234567000]


def test_decode_failed_keeps_raw_and_parses_dates() -> None:
    golden = GOLDEN["failed"]["bytes"]
    fe = decode_failed(golden)
    assert fe.raw == golden
    assert fe.worker == "host:1234" and fe.queue == "test_queue" and fe.exception == "TypeError"
    assert fe.payload == {"class": "slowJob", "queue": "test_queue", "args": [{"to": "é", "n": 1.5}]}
    assert fe.failed_at == GOLDEN["failed"]["failed_at_ms"] / 1000
    assert list(fe.to_dict()) == [*FAILED_KEYS, "raw"]
    ruby = ('{"failed_at":"2014/12/12 22:01:16 UTC","payload":{"class":"X","args":[]},"exception":"RuntimeError",'
            '"error":"x","backtrace":["a.rb:1"],"worker":"host:1:q","queue":"q","retried_at":null}')
    fr = decode_failed(ruby)
    assert (fr.failed_at, fr.queue, fr.raw) == (1418421676.0, "q", ruby)
    junk = decode_failed("[1,2]")
    assert junk.raw == "[1,2]" and junk.payload is None


# -- live: the fixture and js_dumps against Node ------------------------------------------------


def test_fixture_matches_node() -> None:
    """golden.js run now prints exactly the committed fixture (fixtures cannot drift from Node)."""
    node = _node_or_missing()
    proc = subprocess.run([node, str(INTEROP / "golden.js")], cwd=INTEROP, capture_output=True, text=True,
                          encoding="utf-8", timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == FIXTURE.read_text(encoding="utf-8"), (
        "tests/interop/fixtures/golden.json is stale: regenerate it with "
        "`node tests/interop/golden.js > tests/interop/fixtures/golden.json`")


def _stringify_in_node(texts: list[str]) -> list[str]:
    node = _node_or_missing()
    proc = subprocess.run([node, str(INTEROP / "stringify.js")], cwd=INTEROP, input="".join(t + "\n" for t in texts),
                          capture_output=True, text=True, encoding="utf-8", timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.split("\n")
    assert out[-1] == ""
    return out[:-1]


# Pools for the seeded generator below. Keys mix array-index keys ("0", "10", "4294967294") with
# others; strings mix ASCII, controls, non-ASCII, astral characters and lone surrogates (never a
# high surrogate followed by a low one: in Python that pair is two code points, in JS one emoji).
_KEY_PARTS = ["a", "b", "z", "é", "日", "😀", " ", "", "0", "1", "9", "10", "007", "-1", "1.5", "4294967294",
              "4294967295", "2147483648", "x1", "01"]
_CHARS = [*"az09 /\\\"'<>&", "\x00", "\x01", "\x1f", "\x7f", "\x80", "\u2028", "\ufeff", "é", "日", "😀", "🇫",
          "\ud800", "\udbff", "\udc00", "\udfff"]
_FLOATS = [1.0, -0.0, 0.0, 1e-7, 1e-6, 1e21, 1e20, 0.1 + 0.2, 5e-324, 2.0**53, 1.7976931348623157e308, 123e-20,
           -1.5, 4.35, 1 / 3, 100.0]


def _random_string(rnd: random.Random, pool: list[str], n: int) -> str:
    out = ""
    for _ in range(n):
        c = rnd.choice(pool)
        if "\ud800" <= out[-1:] <= "\udbff" and "\udc00" <= c[:1] <= "\udfff":
            continue
        out += c
    return out


def _random_float(rnd: random.Random) -> float:
    pick = rnd.random()
    if pick < 0.3:
        return rnd.choice(_FLOATS)
    if pick < 0.6:
        return rnd.uniform(-1, 1) * 10.0 ** rnd.randint(-30, 30)
    while True:  # any finite double, from its bits
        f: float = struct.unpack("<d", rnd.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(f):
            return f


def _random_value(rnd: random.Random, depth: int = 0) -> Any:
    pick = rnd.random()
    if depth < 4 and pick < 0.2:
        return [_random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    if depth < 4 and pick < 0.45:
        return {_random_string(rnd, _KEY_PARTS, rnd.randint(1, 2)): _random_value(rnd, depth + 1)
                for _ in range(rnd.randint(0, 5))}
    leaf = rnd.randint(0, 5)
    if leaf == 0:
        return rnd.choice([None, True, False])
    if leaf == 1:
        return rnd.randint(-MAX_SAFE_INT, MAX_SAFE_INT) // 10 ** rnd.randint(0, 15)
    if leaf in (2, 3):
        return _random_float(rnd)
    return _random_string(rnd, _CHARS, rnd.randint(0, 10))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_js_dumps_matches_node_on_random_values(seed: int) -> None:
    """400 seeded random values: js_dumps(v) == JSON.stringify(JSON.parse(json.dumps(v))) in Node."""
    rnd = random.Random(seed)
    values = [_random_value(rnd) for _ in range(400)]
    texts = [json.dumps(v) for v in values]  # ASCII-escaped: lone surrogates travel safely
    js = _stringify_in_node(texts)
    assert len(js) == len(values)
    mismatches = []
    for v, text, expected in zip(values, texts, js, strict=True):
        for candidate in (v, json.loads(text)):
            try:
                got = js_dumps(candidate)
            except Exception as e:  # reported below with the value
                got = f"raised {e!r}"
            if got != expected:
                mismatches.append((text, expected, got))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:3]}"


class _Colour(enum.IntEnum):
    RED = 1


class _Name(enum.StrEnum):
    ADA = "ada"


@pytest.mark.parametrize("value", [
    [{"n": _Colour.RED, "who": _Name.ADA}], [collections.OrderedDict([("10", 1), ("a", 2), ("2", 3)])],
    [(1, 2.0, "é")], [{"k": [1.5, {"0": None}]}], [{"\ud800": 1}], [{"s": "a\udfffb"}], [2**53 - 1, -(2**53 - 1)],
])
def test_js_dumps_fast_check_agrees_with_the_js_spelling(value: Any) -> None:
    """The exact-type dispatch of the hot path (subclasses fall back to isinstance) never changes
    what is written: whatever it lets through to `json` is spelled as the JS-faithful encoder does."""
    assert js_dumps(value) == _js_dumps(value)
