// Runs one node-resque Scheduler and reports what it did, for the leader-lock interop tests.
//
//   node scheduler.js HOST PORT NAMESPACE OPTIONS_JSON
//
// OPTIONS_JSON: {"name": "interop-scheduler", "seconds": 10, "timeout": 100}. `timeout` is the
// poll period in ms; "stuckWorkerTimeout" (ms) and "retryStuckJobs" pass through to node-resque
// (each worker it force-cleans prints {"event": "cleanStuckWorker", "worker", "payload"}). Prints one JSON line per event as it happens: {"event": "leader"} when it
// wins the lock `resque_scheduler_leader_lock`, {"event": "transferredJob", "timestamp", "job"}
// for every delayed job it promotes, {"event": "poll"} the first time it polls as leader, and
// {"event": "started"}; the last line is {"event": "end", "leader": n, "transferred": n,
// "polls": n, "lock": value of the lock key just before ending}.
//
// Exits by itself after `seconds` (default 10) or, with "stdin": true, when stdin closes;
// `end()` releases the lock if it holds it (node-resque's own shutdown). Status 0, or 2 on an
// error.
"use strict";

const { Scheduler } = require("node-resque");

const [host, port, namespace, optionsJson] = process.argv.slice(2);
const options = JSON.parse(optionsJson || "{}");
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

async function main() {
  const scheduler = new Scheduler({
    connection: { host, port: Number(port), namespace },
    name: options.name || "interop-scheduler",
    timeout: options.timeout || 100,
    ...(options.stuckWorkerTimeout ? { stuckWorkerTimeout: options.stuckWorkerTimeout } : {}),
    ...(options.retryStuckJobs ? { retryStuckJobs: true } : {}),
  });
  let leader = 0;
  let transferred = 0;
  let polls = 0;
  scheduler.on("leader", () => {
    leader += 1;
    emit({ event: "leader" });
  });
  scheduler.on("poll", () => {
    polls += 1;
    if (polls === 1) emit({ event: "poll" });
  });
  scheduler.on("transferredJob", (timestamp, job) => {
    transferred += 1;
    emit({ event: "transferredJob", timestamp, job });
  });
  scheduler.on("cleanStuckWorker", (worker, errorPayload) =>
    emit({ event: "cleanStuckWorker", worker, payload: errorPayload ? errorPayload.payload : null }),
  );
  scheduler.on("error", (error) => emit({ event: "error", error: String(error) }));
  await scheduler.connect();
  await scheduler.start();
  emit({ event: "started" });
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, (options.seconds || 10) * 1000);
    if (options.stdin) {
      process.stdin.on("end", () => {
        clearTimeout(timer);
        resolve();
      });
      process.stdin.resume();
    }
  });
  const lock = await scheduler.connection.redis.get(scheduler.queue.leaderKey());
  await scheduler.end();
  emit({ event: "end", leader, transferred, polls, lock });
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`scheduler.js: ${err && err.stack ? err.stack : err}\n`);
    process.exit(2);
  },
);
