// node-resque side of the peer benchmark (node-resque from tests/interop/node_modules; NODE_PATH set by the harness).
//   node node_resque.js worker   [--scheduler]           a Worker (defaults: timeout 5000 ms) on queue "bench",
//                                                          plus a Scheduler (defaults) with --scheduler; runs until SIGTERM
//   node node_resque.js enqueue  --n N [--concurrency C]  N queue.enqueue("bench", "noop", []), C at a time (default 1)
//   node node_resque.js stamp    --i I                     one stamp job (warm-up)
//   node node_resque.js pickup   --n N --spacing MS        N stamp jobs, MS apart; prints the send times
//   node node_resque.js delayed  --dues a,b,c             queue.enqueueAt(due ms, "bench", "stamp", [i])
// Prints one JSON line on stdout. Redis from BENCH_REDIS_URL (redis://127.0.0.1:PORT/0).
"use strict";
const { Queue, Worker, Scheduler } = require("node-resque");
const IORedis = require("ioredis");

const url = new URL(process.env.BENCH_REDIS_URL || "redis://127.0.0.1:6379/0");
const connection = {
  pkg: "ioredis",
  host: url.hostname,
  port: Number(url.port),
  database: Number((url.pathname || "/0").slice(1) || 0),
  namespace: "resque",
};
const now = () => (performance.timeOrigin + performance.now()) / 1000; // epoch seconds, sub-ms

// BENCH_STARTS_DIR set (the harness's default): the start is appended to <dir>/<pid>.starts with one
// synchronous write, as bench/peers/apps/_stamp.py does; otherwise RPUSHed to bench:starts (`--starts redis`).
const fs = require("fs");
const path = require("path");
const startsDir = process.env.BENCH_STARTS_DIR || "";
let startsFd = null;
let stampClient = null;
const jobs = {
  noop: { perform: async () => null },
  stamp: {
    perform: async (i) => {
      const started = now();
      if (startsDir) {
        if (startsFd === null) startsFd = fs.openSync(path.join(startsDir, `${process.pid}.starts`), "a");
        fs.writeSync(startsFd, `${i} ${started}\n`);
        return null;
      }
      if (stampClient === null) stampClient = new IORedis(connection.port, connection.host, { db: connection.database });
      await stampClient.rpush("bench:starts", `${i} ${started}`);
      return null;
    },
  },
};

function arg(name, dflt) {
  const k = process.argv.indexOf(`--${name}`);
  return k >= 0 ? process.argv[k + 1] : dflt;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const mode = process.argv[2];
  if (mode === "worker") {
    const worker = new Worker({ connection, queues: ["bench"] }, jobs);
    worker.on("error", (err) => console.error("worker error", err));
    worker.on("failure", (q, job, failure) => console.error("job failure", failure));
    await worker.connect();
    worker.start();
    let scheduler = null;
    if (process.argv.includes("--scheduler")) {
      scheduler = new Scheduler({ connection });
      scheduler.on("error", (err) => console.error("scheduler error", err));
      await scheduler.connect();
      scheduler.start();
    }
    const stop = async () => {
      const t = setTimeout(() => process.exit(1), 8000);
      try {
        if (scheduler) await scheduler.end();
        await worker.end();
      } finally {
        clearTimeout(t);
        process.exit(0);
      }
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
    return;
  }
  const queue = new Queue({ connection }, jobs);
  queue.on("error", (err) => console.error("queue error", err));
  await queue.connect();
  let out = {};
  if (mode === "enqueue") {
    const n = Number(arg("n"));
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const conc = Number(arg("concurrency", "1"));
    for (let i = 0; i < n; i += conc) {
      const batch = [];
      for (let k = i; k < Math.min(n, i + conc); k++) batch.push(queue.enqueue("bench", "noop", []));
      await Promise.all(batch);
    }
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(c0);
    out = { seconds: secs, client_cpu_s: (c.user + c.system) / 1e6 };
  } else if (mode === "stamp") {
    await queue.enqueue("bench", "stamp", [Number(arg("i"))]);
  } else if (mode === "pickup") {
    const n = Number(arg("n"));
    const spacing = Number(arg("spacing"));
    const sent = {};
    for (let i = 0; i < n; i++) {
      sent[i] = now();
      await queue.enqueue("bench", "stamp", [i]);
      await sleep(spacing);
    }
    out = { sent };
  } else if (mode === "delayed") {
    const dues = arg("dues").split(",").map(Number);
    for (let i = 0; i < dues.length; i++) await queue.enqueueAt(Math.round(dues[i] * 1000), "bench", "stamp", [i]);
    out = { enqueued: dues.length, finished_at: now() };
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  await queue.end();
  if (stampClient) stampClient.disconnect();
  process.stdout.write(JSON.stringify(out) + "\n");
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
