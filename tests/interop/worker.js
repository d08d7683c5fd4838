// Runs one node-resque Worker with the interop jobs until it has finished N jobs or time is up.
//
//   node worker.js HOST PORT NAMESPACE OPTIONS_JSON
//
// OPTIONS_JSON: {"queues": ["default"], "name": "interop-worker", "expect": 3, "seconds": 15,
// "timeout": 100}. Jobs (the same names as the Corral tasks of tests/integration/test_interop.py):
// `record` (succeeds), `boom` (throws Error("boom: <first arg as JSON>")), `slow` (sleeps
// args[0].seconds, default 2), `flaky` (prints {"event": "attempt", "args"} and throws; node-resque's
// Retry plugin with "retryLimit" and "retryDelay" (ms) from OPTIONS_JSON, defaults 3 and 100).
// A job starting prints {"event": "job", "queue", "job"}; each finished job prints a line as it
// happens, {"event": "success"|"failure", "queue", "job", "error"?}; the last line is the summary
// {"event": "end", "reason": "expected"|"timeout", "success": n, "failure": n}.
//
// Exits by itself after `expect` jobs or `seconds` (default 15), whichever comes first; with
// "stdin": true, stdin closing stops it early. Status 0, or 2 on an error.
"use strict";

const { Worker, Plugins } = require("node-resque");

const [host, port, namespace, optionsJson] = process.argv.slice(2);
const options = JSON.parse(optionsJson || "{}");
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const jobs = {
  record: { perform: async (...args) => ({ ok: true, args }) },
  boom: {
    perform: async (...args) => {
      throw new Error("boom: " + JSON.stringify(args[0]));
    },
  },
  slow: {
    perform: async (...args) => {
      const seconds = args[0] && typeof args[0].seconds === "number" ? args[0].seconds : 2;
      await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
      return true;
    },
  },
  flaky: {
    plugins: [Plugins.Retry],
    pluginOptions: { Retry: { retryLimit: options.retryLimit || 3, retryDelay: options.retryDelay || 100 } },
    perform: async (...args) => {
      emit({ event: "attempt", args });
      throw new Error("flaky: " + JSON.stringify(args[0]));
    },
  },
};

async function main() {
  const worker = new Worker(
    {
      connection: { host, port: Number(port), namespace },
      queues: options.queues || ["default"],
      name: options.name || "interop-worker",
      timeout: options.timeout || 100,
    },
    jobs,
  );
  let success = 0;
  let failure = 0;
  let stopping = null;
  const stop = (reason) => {
    if (stopping) return stopping;
    stopping = (async () => {
      clearTimeout(timer);
      await worker.end();
      emit({ event: "end", reason, success, failure });
    })();
    return stopping;
  };
  const timer = setTimeout(() => stop("timeout"), (options.seconds || 15) * 1000);
  const check = () => {
    if (options.expect && success + failure >= options.expect) setImmediate(() => stop("expected"));
  };
  worker.on("success", (queue, job) => {
    success += 1;
    emit({ event: "success", queue, job });
    check();
  });
  worker.on("failure", (queue, job, error) => {
    failure += 1;
    emit({ event: "failure", queue, job, error: String(error) });
    check();
  });
  worker.on("job", (queue, job) => emit({ event: "job", queue, job }));
  worker.on("error", (error, queue) => emit({ event: "error", queue, error: String(error) }));
  await worker.connect();
  await worker.start();
  emit({ event: "started", name: worker.name });
  if (options.stdin) {
    process.stdin.on("end", () => stop("stdin closed"));
    process.stdin.resume();
  }
  await new Promise((resolve) => {
    const poll = setInterval(() => {
      if (stopping) {
        clearInterval(poll);
        stopping.then(resolve);
      }
    }, 20);
  });
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`worker.js: ${err && err.stack ? err.stack : err}\n`);
    process.exit(2);
  },
);
