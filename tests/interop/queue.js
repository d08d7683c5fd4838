// Runs node-resque Queue calls against a Redis namespace and prints their results as JSON.
//
//   node queue.js HOST PORT NAMESPACE OPS_JSON
//
// OPS_JSON is a list of calls `[method, ...args]` run in order on one `Queue`; the output is
// one JSON line, the list of their results. Besides every Queue method (`enqueue`,
// `enqueueAt`, `del`, `delDelayed`, `scheduledAt`, `failed`, `workers`, `allWorkingOn`,
// `encode`, ...) two helpers exist, so a failed entry goes back to Redis exactly as node-resque
// parsed it: `["removeFailedAt", i]` and `["retryAndRemoveFailedAt", i]` call
// `removeFailed` / `retryAndRemoveFailed` with `(await queue.failed(i, i))[0]`.
//
//   node queue.js 127.0.0.1 6379 resque '[["enqueue","default","record",[{"a":1}]],["length","default"]]'
//
// Exits by itself: status 0 after the calls, 2 on an error (message on stderr), 3 after 20 s.
"use strict";

const { Queue } = require("node-resque");

const [host, port, namespace, opsJson] = process.argv.slice(2);
const hardStop = setTimeout(() => {
  process.stderr.write("queue.js: still running after 20 s\n");
  process.exit(3);
}, 20000);

async function main() {
  const ops = JSON.parse(opsJson);
  const queue = new Queue({ connection: { host, port: Number(port), namespace } });
  queue.on("error", (err) => {
    process.stderr.write(`queue.js: queue error: ${err}\n`);
  });
  await queue.connect();
  const results = [];
  try {
    for (const [method, ...args] of ops) {
      if (method === "removeFailedAt" || method === "retryAndRemoveFailedAt") {
        const [entry] = await queue.failed(args[0], args[0]);
        if (entry === undefined) throw new Error(`no failed entry at ${args[0]}`);
        results.push(await queue[method === "removeFailedAt" ? "removeFailed" : "retryAndRemoveFailed"](entry));
      } else if (typeof queue[method] === "function") {
        const value = await queue[method](...args);
        results.push(value === undefined ? null : value);
      } else {
        throw new Error(`unknown Queue method ${method}`);
      }
    }
  } finally {
    await queue.end();
  }
  process.stdout.write(JSON.stringify(results) + "\n");
}

main().then(
  () => {
    clearTimeout(hardStop);
  },
  (err) => {
    process.stderr.write(`queue.js: ${err && err.stack ? err.stack : err}\n`);
    process.exit(2);
  },
);
