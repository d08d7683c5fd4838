// Differential oracle for cluster.wire.js_dumps: reads JSON texts, one per line, on stdin and
// prints `JSON.stringify(JSON.parse(line))` for each, one per line, in order.
//
//   printf '[1.0,1e-7]\n{"a":-0.0}\n' | node tests/interop/stringify.js   # [1,1e-7] / {"a":0}
//
// A line that does not parse prints `!` followed by the error message. Exits by itself when
// stdin ends, and after 60 s at the latest.
"use strict";

const timer = setTimeout(() => {
  process.stderr.write("stringify.js: no end of input within 60 s\n");
  process.exit(3);
}, 60000);

let buffered = "";
const out = [];
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  buffered += chunk;
});
process.stdin.on("end", () => {
  for (const line of buffered.split("\n")) {
    if (line === "") continue;
    try {
      out.push(JSON.stringify(JSON.parse(line)));
    } catch (err) {
      out.push("!" + err.message);
    }
  }
  process.stdout.write(out.join("\n") + (out.length ? "\n" : ""), () => {
    clearTimeout(timer);
  });
});
