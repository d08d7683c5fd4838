// Corral dashboard: plain JavaScript, no build step, nothing fetched but this node's /ui/api.
// Every value from the cluster is rendered as text (textContent / text nodes), never as HTML.
"use strict";

const API = "/ui/api/";
const REFRESH_MS = 2000;
const state = { session: null, timer: null, view: null, lastKey: null, token: sessionStorage.getItem("corral-token") || "" };

// ---- DOM helpers ---------------------------------------------------------------------------------

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

const fmtNum = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 90) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${Math.round(s / 86400)} d`;
}

function when(epoch) {
  if (!epoch) return "–";
  const d = new Date(epoch * 1000);
  return h("time", { datetime: d.toISOString(), title: d.toString() }, d.toLocaleString());
}

function json(v) {
  try { return JSON.stringify(v); } catch (e) { return String(v); }
}

function table(headers, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty || "None.");
  return h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col", class: t.endsWith("#") ? "num" : null }, t.replace(/#$/, ""))))),
    h("tbody", {}, rows)));
}

// ---- API -----------------------------------------------------------------------------------------

async function get(path) {
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), 5000);
  try {
    const r = await fetch(API + path, { signal: ctl.signal, headers: { Accept: "application/json" } });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw Object.assign(new Error(body.error || `HTTP ${r.status}`), { status: r.status });
    return body;
  } finally {
    clearTimeout(t);
  }
}

async function act(action, body, confirmText) {
  if (confirmText && !window.confirm(confirmText)) return;
  try {
    const r = await fetch(API + "actions/" + action, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Corral-Token": state.token },
      body: JSON.stringify(body),
    });
    const out = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(out.error || `HTTP ${r.status}`);
    notice(`${action}: done (${json(out.result)})`, false);
  } catch (e) {
    notice(`${action} refused: ${e.message}`, true);
  }
  state.lastKey = null;
  refresh();
}

function canAct() {
  return Boolean(state.session && state.session.actions_enabled && state.token);
}

function actionButton(label, action, body, opts) {
  const o = opts || {};
  const enabled = canAct();
  const why = !state.session || !state.session.actions_enabled
    ? "Read-only: no dashboard token is configured on this node"
    : "Enter the dashboard token above to act";
  return h("button", {
    type: "button", class: o.danger ? "danger" : null, disabled: !enabled, "data-action": action,
    title: enabled ? (o.title || null) : why, "aria-label": o.aria || null,
    onclick: () => act(action, body, o.confirm),
  }, label);
}

function notice(text, isError) {
  const n = document.getElementById("notice");
  n.textContent = text;
  n.className = isError ? "notice err" : "notice";
  n.hidden = false;
  clearTimeout(notice.t);
  notice.t = setTimeout(() => { n.hidden = true; }, isError ? 12000 : 5000);
}

function setConn(ok, text) {
  const c = document.getElementById("conn");
  c.textContent = text;
  c.className = ok ? "conn" : "conn lost";
}

// ---- chart (hand-drawn SVG) ----------------------------------------------------------------------

function niceMax(v) {
  if (v <= 1) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function chart(points, now) {
  const W = 800, H = 200, L = 44, R = 8, T = 8, B = 22;
  const t0 = now - 3600;
  const max = niceMax(Math.max(0, ...points.flatMap((p) => [p[1] || 0, p[2] || 0])));
  const x = (t) => L + ((t - t0) / 3600) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const s = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": "jobs processed and failed per second over the last hour" });
  for (const f of [0, 0.5, 1]) {
    s.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(max * f), y2: y(max * f) }));
    const lab = svg("text", { class: "axis", x: L - 6, y: y(max * f) + 4, "text-anchor": "end" });
    lab.textContent = fmtNum(Math.round(max * f * 100) / 100);
    s.append(lab);
  }
  for (const m of [60, 45, 30, 15, 0]) {
    const lab = svg("text", { class: "axis", x: x(now - m * 60), y: H - 6, "text-anchor": m === 60 ? "start" : m === 0 ? "end" : "middle" });
    lab.textContent = m ? `-${m} min` : "now";
    s.append(lab);
  }
  for (const [idx, cls] of [[1, "p"], [2, "f"]]) {
    let run = [];
    const flush = () => {
      if (run.length === 1) {
        const [cx, cy] = run[0].split(",");
        s.append(svg("circle", { class: cls, cx, cy, r: 2.5 }));
      } else if (run.length) {
        s.append(svg("polyline", { class: cls, points: run.join(" ") }));
      }
      run = [];
    };
    for (const p of points) {
      if (p[0] < t0) continue;
      if (p[idx] === null) { flush(); continue; }
      run.push(`${x(p[0]).toFixed(1)},${y(p[idx]).toFixed(1)}`);
    }
    flush();
  }
  return s;
}

// ---- views ---------------------------------------------------------------------------------------

function pager(page, hasNext, go) {
  return h("div", { class: "bar" },
    h("button", { type: "button", disabled: page <= 0, onclick: () => go(page - 1) }, "← Newer / previous"),
    h("span", { class: "muted" }, `page ${page + 1}`),
    h("button", { type: "button", disabled: !hasNext, onclick: () => go(page + 1) }, "Next →"));
}

function jobCell(j) {
  const parts = [h("code", {}, j.task === null ? "(undecodable entry)" : j.task)];
  if ("args" in j) parts.push(h("div", { class: "mono muted" }, json(j.args)));
  if ("raw" in j) parts.push(h("div", { class: "mono muted" }, j.raw));
  return h("td", {}, parts);
}

const views = {
  async overview() {
    const o = await get("overview");
    const l = o.leader;
    const rates = o.history.filter((p) => p[1] !== null);
    const lastRate = rates.length ? rates[rates.length - 1] : null;
    return [
      h("h2", {}, "Overview"),
      h("dl", { class: "cards" },
        h("div", {}, h("dt", {}, "Leader"), h("dd", { "data-k": "leader" }, l ? l.node : "none",
          h("small", {}, l ? `epoch ${l.epoch === null ? "?" : l.epoch}${l.since ? " · since " + ago(o.time - l.since) + " ago" : ""}${l.backend ? " · " + l.backend : ""}` : "no leader: delayed and periodic jobs wait"))),
        h("div", {}, h("dt", {}, "Nodes"), h("dd", { "data-k": "nodes" }, fmtNum(o.nodes.filter((n) => n.alive).length), h("small", {}, `${o.nodes.length} registered`))),
        h("div", {}, h("dt", {}, "Queued"), h("dd", { "data-k": "queued" }, fmtNum(o.queued), h("small", {}, `${o.queues.length} queues`))),
        h("div", {}, h("dt", {}, "Delayed"), h("dd", { "data-k": "delayed" }, fmtNum(o.delayed), h("small", {}, `${o.delayed_seconds} due seconds`))),
        h("div", {}, h("dt", {}, "Failed"), h("dd", { "data-k": "failed", class: o.failed ? "bad" : null }, fmtNum(o.failed), h("small", {}, `${fmtNum(o.failed_total)} ever`))),
        h("div", {}, h("dt", {}, "Processed"), h("dd", { "data-k": "processed" }, fmtNum(o.processed_total), h("small", {}, "ever"))),
        h("div", {}, h("dt", {}, "Recovered"), h("dd", { "data-k": "recovering" }, fmtNum(o.recovering), h("small", {}, "from dead nodes, not finished yet")))),
      h("figure", {},
        chart(o.history, o.time),
        h("figcaption", {},
          h("span", {}, h("span", { class: "swatch p" }), "processed/s", lastRate ? ` (now ${lastRate[1]})` : ""),
          h("span", {}, h("span", { class: "swatch f" }), "failed/s", lastRate ? ` (now ${lastRate[2]})` : ""),
          h("span", {}, `last hour, ${o.history_step} s samples kept in Redis`))),
      h("h3", {}, "Nodes"),
      table(["Node", "Heartbeat", "Version", "Slots busy#", "Slots idle#", "Role"], o.nodes.map((n) => h("tr", {},
        h("td", {}, h("code", {}, n.id), n.host ? h("div", { class: "muted" }, n.host) : null),
        h("td", { class: n.alive ? null : "bad" }, ago(n.heartbeat_age) + " ago", n.alive ? null : " (dead)"),
        h("td", {}, n.version || "–"),
        h("td", { class: "num" }, fmtNum(n.busy)),
        h("td", { class: "num" }, fmtNum(n.slots - n.busy)),
        h("td", {}, n.is_leader ? h("span", { class: "tag leader" }, "leader") : null, " ",
          n.candidate ? h("span", { class: "tag" }, "candidate") : h("span", { class: "tag" }, "worker only"))))),
      h("h3", {}, "Queues"),
      queuesTable(o),
    ];
  },

  async queues(args) {
    if (args[0]) return queueDetail(decodeURIComponent(args[0]), Number(args[1] || 0));
    const o = await get("overview");
    return [h("h2", {}, "Queues"), queuesTable(o)];
  },

  async delayed(args) {
    const page = Number(args[0] || 0);
    const d = await get(`delayed?page=${page}&size=20`);
    const rows = [];
    for (const s of d.seconds) {
      s.jobs.forEach((j, i) => rows.push(h("tr", {},
        i === 0 ? h("td", { rowspan: s.jobs.length }, when(s.ts), h("div", { class: "muted" }, `${s.count} job${s.count === 1 ? "" : "s"}`)) : null,
        jobCell(j),
        h("td", {}, j.queue || "–"),
        h("td", {}, h("div", { class: "actions" },
          actionButton("Run now", "delayed.run_now", { ts: s.ts, id: j.id }),
          actionButton("Delete", "delayed.delete", { ts: s.ts, id: j.id }, { danger: true, confirm: `Delete every delayed copy of this ${j.task} job?` }))))));
    }
    return [h("h2", {}, "Delayed"), h("p", { class: "muted" }, `${fmtNum(d.seconds_total)} due seconds; run now hands a job to the leader at once.`),
      table(["Due", "Job", "Queue", "Actions"], rows, "No delayed jobs."),
      pager(page, (page + 1) * d.size < d.seconds_total, (p) => go(`#/delayed/${p}`))];
  },

  async periodic() {
    const p = await get("periodic");
    const rows = p.tasks.map((t) => h("tr", {},
      h("td", {}, h("code", {}, t.task), t.description ? h("div", { class: "muted" }, t.description) : null),
      h("td", {}, t.frequency ? `every ${t.frequency} s` : h("code", {}, t.cron), t.timezone && t.cron ? h("div", { class: "muted" }, t.timezone) : null),
      h("td", {}, t.queue),
      h("td", {}, when(t.last)),
      h("td", {}, t.paused ? h("span", { class: "tag paused" }, "paused") : when(t.next)),
      h("td", {}, h("div", { class: "actions" },
        t.paused
          ? actionButton("Resume", "periodic.resume", { task: t.task })
          : actionButton("Pause", "periodic.pause", { task: t.task }, { confirm: `Pause ${t.task}? Its queued and delayed copies are removed.` }),
        actionButton("Run once now", "periodic.run_now", { task: t.task })))));
    return [h("h2", {}, "Periodic"),
      p.known ? null : h("p", { class: "muted" }, "This dashboard has no task files (--tasks-dir): schedules are unknown here."),
      table(["Task", "Schedule", "Queue", "Last occurrence", "Next", "Actions"], rows, "No periodic tasks.")];
  },

  async workers() {
    const w = await get("workers");
    const rows = w.workers.map((x) => h("tr", {},
      h("td", {}, h("code", {}, x.name), x.node ? null : h("div", { class: "muted" }, "another resque client")),
      h("td", {}, x.queues),
      x.job ? jobCell(x.job) : h("td", { class: "muted" }, "idle"),
      h("td", {}, x.job ? x.job.queue : ""),
      h("td", {}, x.job && x.job.since ? [when(x.job.since), h("div", { class: "muted" }, ago(x.job.running_seconds))] : "")));
    return [h("h2", {}, "Workers"), table(["Worker", "Queues", "Job", "Queue", "Running since"], rows, "No workers registered.")];
  },

  async failed(args) {
    const q = new URLSearchParams(args[0] || "");
    const page = Number(q.get("page") || 0);
    const filter = { task: q.get("task") || "", queue: q.get("queue") || "", error: q.get("error") || "" };
    const params = new URLSearchParams({ page, size: 20 });
    for (const [k, v] of Object.entries(filter)) if (v) params.set(k, v);
    const f = await get(`failed?${params}`);
    const form = h("form", { class: "filters", onsubmit: (ev) => {
      ev.preventDefault();
      const fd = new FormData(ev.target);
      const next = new URLSearchParams();
      for (const k of ["task", "queue", "error"]) if (fd.get(k)) next.set(k, fd.get(k));
      go(`#/failed/${next}`);
    } },
      ["task", "queue", "error"].map((k) => h("label", {}, k, h("input", { name: k, value: filter[k], id: `filter-${k}` }))),
      h("button", { type: "submit", class: "primary" }, "Filter"),
      h("button", { type: "button", onclick: () => go("#/failed") }, "Clear"));
    const filtered = filter.task || filter.queue || filter.error;
    const scope = filtered ? `the ${fmtNum(f.matched)} matching` : `all ${fmtNum(f.total)}`;
    const rows = f.entries.map((e) => h("tr", {},
      h("td", {}, h("code", {}, e.task || "?"), "args" in e ? h("div", { class: "mono muted" }, json(e.args)) : null),
      h("td", {}, e.queue || "–"),
      h("td", {}, h("details", { "data-key": e.id },
        h("summary", {}, h("strong", {}, e.exception || "Error"), ": ", e.error || ""),
        h("pre", { class: "mono" }, Array.isArray(e.backtrace) ? e.backtrace.join("\n") : json(e.backtrace)),
        h("div", { class: "muted" }, "worker ", e.worker || "?"))),
      h("td", {}, when(e.failed_at)),
      h("td", {}, h("div", { class: "actions" },
        actionButton("Retry", "failed.retry", { id: e.id, position: e.position }),
        actionButton("Remove", "failed.remove", { id: e.id, position: e.position }, { danger: true })))));
    return [h("h2", {}, "Failed"), form,
      h("p", { class: "muted" }, `${fmtNum(f.matched)} matching of ${fmtNum(f.total)}` + (f.scanned < f.total ? ` (first ${fmtNum(f.scanned)} searched)` : "")),
      h("div", { class: "bar" },
        actionButton(`Retry ${filtered ? "matching" : "all"}`, "failed.retry_all", filter, { confirm: `Retry ${scope} failed jobs?` }),
        actionButton(`Remove ${filtered ? "matching" : "all"}`, "failed.remove_all", filter, { danger: true, confirm: `Remove ${scope} failed jobs? This cannot be undone.` })),
      table(["Task", "Queue", "Error", "Failed at", "Actions"], rows, filtered ? "No failed job matches." : "No failed jobs."),
      pager(page, (page + 1) * f.size < f.matched, (p) => { const n = new URLSearchParams(args[0] || ""); n.set("page", p); go(`#/failed/${n}`); })];
  },

  async locks() {
    const l = await get("locks");
    const rows = l.locks.map((x) => h("tr", {},
      h("td", {}, h("code", {}, x.key)),
      h("td", {}, h("code", {}, x.value)),
      h("td", { class: "num" }, x.ttl < 0 ? "none" : ago(x.ttl)),
      h("td", {}, actionButton("Delete", "lock.delete", { id: x.id }, { danger: true, confirm: "Delete this lock? A job it guards may then run twice." }))));
    return [h("h2", {}, "Locks"), table(["Lock", "Held by", "TTL#", "Actions"], rows, "No plugin locks held.")];
  },
};

function queuesTable(o) {
  return table(["Queue", "Length#", "Oldest job#"], o.queues.map((q) => h("tr", {},
    h("td", {}, h("a", { href: `#/queues/${encodeURIComponent(q.name)}` }, q.name)),
    h("td", { class: "num", "data-queue": q.name }, fmtNum(q.length)),
    h("td", { class: "num" }, q.oldest_age === null ? "–" : ago(q.oldest_age)))), "No queues.");
}

async function queueDetail(name, page) {
  const d = await get(`queue?name=${encodeURIComponent(name)}&page=${page}&size=50`);
  const rows = d.jobs.map((j) => h("tr", {},
    h("td", { class: "num" }, j.position + 1),
    jobCell(j),
    h("td", {}, actionButton("Delete", "queue.delete_job", { queue: name, id: j.id, position: j.position }, { danger: true }))));
  return [h("h2", {}, "Queue ", h("code", {}, name)),
    h("div", { class: "bar" }, h("span", {}, `${fmtNum(d.length)} jobs`),
      actionButton("Clear queue", "queue.clear", { queue: name }, { danger: true, confirm: `Delete all ${d.length} jobs of queue ${name}? This cannot be undone.` }),
      h("a", { href: "#/queues" }, "All queues")),
    table(["#", "Job", "Actions"], rows, "This queue is empty."),
    pager(page, (page + 1) * d.size < d.length, (p) => go(`#/queues/${encodeURIComponent(name)}/${p}`))];
}

// ---- router and refresh loop ---------------------------------------------------------------------

function route() {
  const parts = (location.hash.replace(/^#\/?/, "") || "overview").split("/");
  const name = views[parts[0]] ? parts[0] : "overview";
  return { name, args: parts.slice(1) };
}

function go(hash) {
  if (location.hash === hash) refresh(); else location.hash = hash;
}

async function refresh() {
  clearTimeout(state.timer);
  const hash = location.hash;
  const r = route();
  const key = `${r.name}/${r.args.join("/")}`;
  const main = document.getElementById("main");
  try {
    if (!state.session) {
      state.session = await get("session");
      document.getElementById("foot-node").textContent =
        `node ${state.session.node} · Corral ${state.session.version} · ` +
        (state.session.actions_enabled ? "actions need the token" : "read-only (no token configured)") +
        (state.session.payloads ? " · job args shown" : " · job args hidden");
    }
    const content = await views[r.name](r.args);
    const fresh = h("div", {}, content);
    // Replace only what changed, keeping focus and open <details> where the same element exists.
    if (state.lastKey !== key || main.dataset.sig !== fresh.textContent + canAct()) {
      const focused = document.activeElement && main.contains(document.activeElement) ? focusPath(document.activeElement) : null;
      const open = new Set([...main.querySelectorAll("details[open]")].map((d) => d.dataset.key));
      main.dataset.sig = fresh.textContent + canAct();
      main.replaceChildren(...fresh.childNodes);
      for (const d of main.querySelectorAll("details")) if (open.has(d.dataset.key)) d.open = true;
      if (focused) restoreFocus(main, focused);
      state.lastKey = key;
    }
    main.dataset.hash = hash;  // what is shown (tests wait on it)
    for (const a of document.querySelectorAll("nav a")) {
      if (a.getAttribute("href") === `#/${r.name === "overview" ? "" : r.name}`) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    setConn(true, `live · updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    setConn(false, `connection lost: ${e.message || e} · retrying every ${REFRESH_MS / 1000} s · numbers below are stale`);
  }
  if (!document.hidden) state.timer = setTimeout(refresh, REFRESH_MS);
}

function focusPath(el) {
  return { tag: el.tagName, action: el.dataset.action || null, text: el.textContent, id: el.id || null,
    index: [...document.getElementById("main").querySelectorAll(el.tagName)].indexOf(el) };
}

function restoreFocus(main, f) {
  const el = (f.id && document.getElementById(f.id)) || main.querySelectorAll(f.tag)[f.index];
  if (el) el.focus({ preventScroll: true });
}

function initToken() {
  const input = document.getElementById("token");
  input.value = state.token;
  document.getElementById("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = input.value.trim();
    sessionStorage.setItem("corral-token", state.token);
    state.lastKey = null;
    refresh();
  });
  document.getElementById("token-forget").addEventListener("click", () => {
    state.token = "";
    input.value = "";
    sessionStorage.removeItem("corral-token");
    state.lastKey = null;
    refresh();
  });
}

window.addEventListener("hashchange", () => { state.lastKey = null; refresh(); document.getElementById("main").focus({ preventScroll: true }); });
document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
initToken();
refresh();
