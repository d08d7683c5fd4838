// Golden bytes for Corral's wire format, produced by node-resque itself.
//
//   node tests/interop/golden.js > tests/interop/fixtures/golden.json
//
// Prints (pretty JSON, deterministic) what node-resque writes for a table of tricky jobs, what
// `Date.prototype.toString()` prints in UTC and in two other zones, and a node-resque failed
// entry. tests/unit/test_wire.py checks `cluster.wire` reproduces every byte, and runs this
// script again to check the committed fixture has not drifted from Node.
//
// Each job case carries `args_source`: JSON text both sides parse (JS `JSON.parse`, Python
// `json.loads`), so Python gets the same value with its own types (`1.0` is a float in Python
// and the number 1 in JS) and `bytes` is node-resque's `Queue.encode` of that value.
"use strict";

process.env.TZ = "UTC";

const { Queue, Worker } = require("node-resque");

const encode = (q, func, args) => Queue.prototype.encode.call(null, q, func, args);

// [name, class, queue, args as JSON text, note]
const JOBS = [
  ["empty params", "sayHello", "default", "[{}]", "periodic tasks enqueue {}"],
  ["no args", "sayHello", "default", "[]", ""],
  ["null param", "sayHello", "default", "[null]", "actionhero's stopRecurrentTask deletes with [null]"],
  ["several args", "legacyJob", "default", "[1,\"two\",[3],{\"four\":4},null,true,false]", "Ruby-style positional args"],
  ["simple params", "sendWelcomeEmail", "default", "[{\"to\":\"evan@example.com\"}]", ""],
  ["integral floats", "t", "default", "[{\"a\":1.0,\"b\":-2.0,\"c\":100.0,\"d\":0.0,\"e\":1e2,\"f\":12345678.0}]",
    "Python keeps 1.0, JS prints 1"],
  ["negative zero", "t", "default", "[{\"a\":-0.0,\"b\":-0,\"c\":[-0.0]}]", "JS prints -0 as 0"],
  ["small exponents", "t", "default",
    "[{\"a\":1e-7,\"b\":1.5e-7,\"c\":-1e-7,\"d\":1e-6,\"e\":0.000001,\"f\":1.234e-6,\"g\":1e-5,\"h\":5e-324,\"i\":1.2e-10}]",
    "JS: 1e-7 (Python 1e-07); 0.000001 stays positional"],
  ["large exponents", "t", "default",
    "[{\"a\":1e21,\"b\":1e20,\"c\":1.2345678901234568e20,\"d\":-1e21,\"e\":1.7976931348623157e308,\"f\":1e300,\"g\":2.5e22,\"h\":123e18}]",
    "JS switches to exponents at 1e21"],
  ["0.1 + 0.2", "t", "default", "[{\"sum\":0.30000000000000004,\"third\":0.3333333333333333,\"x\":4.35,\"y\":-1.5}]",
    "shortest round-trip digits"],
  ["safe integers", "t", "default",
    "[{\"max\":9007199254740991,\"min\":-9007199254740991,\"two53f\":9007199254740992.0,\"big\":123456789012,\"zero\":0}]",
    "2**53-1 is the largest int JS keeps exact"],
  ["non-ASCII", "t", "default", "[{\"name\":\"Zoë Ünïcödé\",\"jp\":\"日本語\",\"ru\":\"Привет\",\"ar\":\"مرحبا\"}]",
    "raw UTF-8, never \\u escapes"],
  ["emoji", "t", "default", "[{\"e\":\"😀🎉\",\"flag\":\"🇫🇷\",\"zwj\":\"👩‍👩‍👧\"}]", "astral code points"],
  ["control characters", "t", "default",
    "[{\"c\":\"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f \\u007f\\u0080\\u009f\"}]", "JS escapes below U+0020 only"],
  ["line separators", "t", "default", "[{\"ls\":\"a\\u2028b\\u2029c\",\"bom\":\"\\ufeff\"}]", "U+2028/9 stay raw"],
  ["slash and quotes", "t", "default", "[{\"url\":\"http://x/y?a=b&c=<d>\",\"html\":\"</script>\",\"q\":\"\\\"\",\"bs\":\"\\\\\"}]",
    "JSON.stringify never escapes /"],
  ["nested key order", "t", "default",
    "[{\"z\":1,\"a\":{\"y\":[{\"b\":2,\"a\":1}],\"x\":null},\"m\":{\"c\":{},\"b\":[]}}]", "insertion order kept"],
  ["empty containers", "t", "default", "[{\"o\":{},\"a\":[],\"oa\":[{}],\"ao\":{\"\":[]},\"deep\":[[[]]]}]", ""],
  ["empty key and string", "t", "default", "[{\"\":\"\",\" \":\" \"}]", ""],
  ["booleans and null", "t", "default", "[{\"t\":true,\"f\":false,\"n\":null}]", ""],
  ["lone surrogates", "t", "default", "[{\"hi\":\"\\ud800\",\"lo\":\"a\\udc00b\",\"rev\":\"\\udc00\\ud800\"}]",
    "well-formed JSON.stringify escapes them"],
  ["integer-like keys", "t", "default", "[{\"b\":1,\"2\":2,\"1\":3,\"01\":4,\"a\":5}]",
    "JS orders array-index keys first, ascending"],
  ["integer-like keys at the limits", "t", "default",
    "[{\"x\":1,\"4294967295\":2,\"4294967294\":3,\"-1\":4,\"1.5\":5,\"0\":6,\"10\":7,\"9\":8}]",
    "2**32-2 is the largest array index; negative and fractional keys keep insertion order"],
  ["non-ASCII digit keys", "t", "default", "[{\"b\":1,\"\u0661\":2,\"\u00b2\":3,\"2\":4}]",
    "only ASCII digits make array-index keys"],
  ["lone surrogate key", "t", "default", "[{\"\ud800\":1,\"a\":{\"\udfff\":2}}]", "keys are escaped like values"],
  ["non-ASCII class and queue", "tâche", "file-é", "[{\"k\":\"v\"}]", ""],
  ["slash in names", "reports/daily", "mail/low", "[{}]", ""],
];

// Epoch milliseconds for `Date.prototype.toString()`.
const DATES = [0, 1, 999, 86400000, 1418421676000, 1700000000123, 951782400000, 4102444800000, -86400000];
const ZONES = ["America/Los_Angeles", "Asia/Kolkata"];

function failedEntry() {
  // node-resque's own failurePayload (worker.ts), with a fixed error and date.
  const err = new TypeError("MyImport is not a function");
  err.stack = "TypeError: MyImport is not a function\n    at Worker.perform (/app/worker.js:111:24)\n    at <anonymous>";
  const job = JSON.parse(encode("test_queue", "slowJob", [{ to: "é", n: 1.5 }]));
  const self = { name: "host:1234", queue: "test_queue" };
  const entry = Worker.prototype.failurePayload.call(self, err, job);
  entry.failed_at = new Date(1418421676000).toString();
  return { failed_at_ms: 1418421676000, bytes: JSON.stringify(entry) };
}

function main() {
  const out = { generator: "tests/interop/golden.js", jobs: [], dates: [], zoned_dates: [], failed: null };
  for (const [name, cls, queue, argsSource, note] of JOBS) {
    const args = JSON.parse(argsSource);
    out.jobs.push({ name, class: cls, queue, args_source: argsSource, bytes: encode(queue, cls, args), note });
  }
  for (const ms of DATES) out.dates.push({ ms, string: new Date(ms).toString() });
  out.failed = failedEntry();
  for (const zone of ZONES) {
    process.env.TZ = zone;
    for (const ms of [0, 1418421676000, 1700000000123]) {
      out.zoned_dates.push({ zone, ms, string: new Date(ms).toString() });
    }
  }
  process.env.TZ = "UTC";
  process.stdout.write(JSON.stringify(out, null, 2) + "\n");
}

main();
