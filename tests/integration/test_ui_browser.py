"""The dashboard in a real headless browser: Debian's chromium (/usr/bin/chromium) driven by
Playwright for Python (never `playwright install`: no browser download). Under CI a missing
browser fails the test; on a developer's machine it skips.

- Every page loads with no console error, no request leaves the node, the page weighs < 200 KB,
  375 px wide has no horizontal page scroll; screenshots of each page go to $CORRAL_SCREENSHOTS
  (docs/screenshots/ to refresh the README's) or a scratch dir.
- The numbers shown equal Redis, and follow it without a reload; a lost node shows "connection lost".
- A failed job retried from the page with the token runs.
- Without a configured token the buttons are disabled and a POST from the page is 403.
- Pausing a periodic task from the page stops its occurrences; resuming does not back-fill.
- A task name holding `<script>` (and a failed job named like an `<img onerror>`) renders as text.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cluster.wire import encode_failed, encode_job
from tests.integration.ui_support import FAST, HOSTILE_FAILED_TASK, HOSTILE_TASK, TOKEN, ui_get, write_tasks
from tests.support import missing, wait_until
from tests.support.nodes import NodeCluster, NodeProcess

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Screenshots go to a scratch dir: a test run must not change tracked files. To refresh the
# README's pictures: CORRAL_SCREENSHOTS=docs/screenshots pytest tests/integration/test_ui_browser.py
SHOTS = Path(os.environ.get("CORRAL_SCREENSHOTS") or tempfile.mkdtemp(prefix="corral-screenshots-"))
PAGES = {"overview": "#/", "queues": "#/queues", "queue": "#/queues/parked", "delayed": "#/delayed",
         "periodic": "#/periodic", "workers": "#/workers", "failed": "#/failed", "locks": "#/locks"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


class Page:
    """A browser page on one node's dashboard that records console errors and every request."""

    def __init__(self, browser: Any, node: NodeProcess, **context: Any) -> None:
        self.base = f"{node.url}/ui/"
        self.ctx = browser.new_context(**context)
        self.page = self.ctx.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.bytes = 0
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("response", self._count)
        self.page.on("dialog", lambda d: d.accept())

    def _count(self, resp: Any) -> None:
        try:
            self.bytes += len(resp.body())
        except Exception:
            pass

    def open(self, hash_: str = "#/") -> Any:
        self.page.goto(self.base + hash_)
        self.page.wait_for_selector(f'main[data-hash="{hash_}"] h2')
        self.page.wait_for_selector("#conn:not(.lost)")
        return self.page

    def use_token(self, token: str) -> None:
        self.page.fill("#token", token)
        self.page.click("#token-form button[type=submit]")

    def close(self) -> None:
        self.ctx.close()


def _seed(r: redis.Redis) -> None:
    for i in range(5):
        r.rpush("resque:queue:parked", encode_job("record", "parked", [{"to": f"user{i}@example.com"}]))
    r.sadd("resque:queues", "parked")
    now = int(time.time())
    for i in range(3):
        ts = now + 300 * (i + 1)
        job = encode_job("record", "work", [{"reminder": i}])
        r.rpush(f"resque:delayed:{ts}", job)
        r.sadd(f"resque:timestamps:{job}", f"delayed:{ts}")
        r.zadd("resque:delayed_queue_schedule", {str(ts): ts})
    for i, (task, err) in enumerate([("record", "ConnectionError: db timed out"), (HOSTILE_FAILED_TASK, "hostile"),
                                     ("fails", "kaboom <b>not bold</b>")]):
        r.rpush("resque:failed", encode_failed(
            worker="n1+1", queue="work", payload_raw=encode_job(task, "work", [{"i": i}]), exception="ValueError",
            error=err, backtrace=["tasks/ui.py:12 in fails", "cluster/worker.py:200 in run"], failed_at=time.time()))
    r.set('resque:workerslock:record:work:[{"i":1}]', "n1+1", ex=600)


def _seed_history(r: redis.Redis) -> None:
    """50 minutes of samples before now, as the nodes would have written them under a varying
    load (the screenshots' chart); the nodes' own samples follow on from them."""
    import math

    step = 10
    now_bucket = int(time.time() // step)
    p = f = 0
    rows = {}
    for k in range(300, 1, -1):
        b = now_bucket - k
        p += int(step * (45 + 30 * math.sin(k / 25) + 10 * math.sin(k / 4)))
        f += int(step * (0.4 + (6 if 120 < k < 130 else 0)))
        rows[f"{b}:{p}:{f}"] = b * step + 0.5
    r.zadd("resque:corral:history", rows)
    r.incrby("resque:stat:processed", p)
    r.incrby("resque:stat:failed", f)


def _node(node_cluster: NodeCluster, tmp_path: Path, token: str | None = TOKEN,
          payloads: bool = True) -> NodeProcess:
    env = {"CORRAL_UI_TOKEN": token} if token else {}
    if payloads:
        env["CORRAL_STATUS_PAYLOADS"] = "true"
    (node,) = node_cluster.start(1, tasks_dir=write_tasks(tmp_path), queues="work", extra_args=FAST, env=env)
    node_cluster.wait_leader(15)
    return node


def _r(node_cluster: NodeCluster) -> redis.Redis:
    return redis.Redis.from_url(node_cluster.redis_url, decode_responses=True)


def test_every_page_loads_cleanly_and_screenshots(browser: Any, node_cluster: NodeCluster, tmp_path: Path) -> None:
    r = _r(node_cluster)
    _seed_history(r)  # before the node's first sample, so its samples follow on
    node = _node(node_cluster, tmp_path)
    _seed(r)
    SHOTS.mkdir(parents=True, exist_ok=True)
    p = Page(browser, node, viewport={"width": 1280, "height": 860})
    p.open()
    p.use_token(TOKEN)
    for name, hash_ in PAGES.items():
        page = p.open(hash_)
        page.wait_for_timeout(300)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        # the nav marks where we are; the page has a heading
        assert page.locator("main h2").count() == 1
    assert p.errors == [], p.errors
    assert all(u.startswith(node.url + "/ui/") for u in p.requests), [u for u in p.requests if "/ui/" not in u]
    p.close()

    # first load's weight: the page, its CSS/JS/icon and the first API answers
    fresh = Page(browser, node, viewport={"width": 1280, "height": 860})
    fresh.open()
    assert fresh.bytes < 200 * 1024, fresh.bytes
    fresh.close()

    mobile = Page(browser, node, viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True)
    for hash_ in PAGES.values():
        page = mobile.open(hash_)
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, hash_
    mobile.open("#/").screenshot(path=str(SHOTS / "overview-375px.png"), full_page=True)
    assert mobile.errors == [], mobile.errors
    mobile.close()

    dark = Page(browser, node, viewport={"width": 1280, "height": 860}, color_scheme="dark")
    page = dark.open("#/")
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(21, 24, 27)", bg
    page.screenshot(path=str(SHOTS / "overview-dark.png"), full_page=True)
    dark.open("#/failed").screenshot(path=str(SHOTS / "failed-dark.png"), full_page=True)
    dark.close()


def test_keyboard_reaches_every_section(browser: Any, node_cluster: NodeCluster, tmp_path: Path) -> None:
    node = _node(node_cluster, tmp_path)
    p = Page(browser, node)
    page = p.open("#/")
    seen = []
    for _ in range(14):
        page.keyboard.press("Tab")
        seen.append(page.evaluate("document.activeElement.textContent.trim()"))
    for section in ("Skip to content", "Overview", "Queues", "Delayed", "Periodic", "Workers", "Failed", "Locks"):
        assert section in seen, (section, seen)
    page.locator("body").focus()
    for _ in range(14):  # Tab to the Locks link and follow it with Enter
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "Locks":
            break
    page.keyboard.press("Enter")
    wait_until(lambda: page.url.endswith("#/locks"), 5, 0.05, message="Enter to follow the Locks link")
    page.wait_for_selector("main h2:text('Locks')")
    assert p.errors == []
    p.close()


def test_shown_numbers_equal_redis_and_follow_it_live(browser: Any, node_cluster: NodeCluster, tmp_path: Path) -> None:
    node = _node(node_cluster, tmp_path)
    r = _r(node_cluster)
    r.hset("resque:corral:periodic:tick", "paused", "1")  # so stat:processed holds still
    time.sleep(1.5)  # a tick already queued or running finishes
    _seed(r)
    p = Page(browser, node)
    page = p.open("#/")

    def shown(key: str) -> int:
        return int(page.locator(f"dd[data-k={key}]").evaluate("e => e.firstChild.textContent").replace(",", ""))

    wait_until(lambda: shown("failed") == r.llen("resque:failed"), 5, 0.1, message="failed count")
    assert shown("delayed") == sum(r.llen(f"resque:delayed:{int(ts)}")
                                   for ts in r.zrange("resque:delayed_queue_schedule", 0, -1))
    assert shown("queued") == sum(r.llen(f"resque:queue:{q}") for q in r.smembers("resque:queues"))
    assert int(page.locator("td[data-queue=parked]").text_content()) == r.llen("resque:queue:parked")
    wait_until(lambda: shown("processed") == int(r.get("resque:stat:processed") or 0), 5, 0.1,
               message="processed count")
    assert page.locator("dd[data-k=leader]").evaluate("e => e.firstChild.textContent") == \
        r.hget("resque:corral:leader", "node")
    # live: Redis changes, the page follows within a couple of refresh periods, no reload
    r.rpush("resque:queue:parked", *[encode_job("record", "parked", [{}])] * 4)
    wait_until(lambda: page.locator("td[data-queue=parked]").text_content() == "9", 6, 0.1,
               message="the page to show the new queue length")
    assert p.errors == []
    # a lost connection is shown, not hidden
    node.kill()
    page.wait_for_selector("#conn.lost", timeout=8000)
    assert "connection lost" in (page.locator("#conn").text_content() or "")
    p.close()


def test_failed_job_retried_from_the_page_with_the_token_runs(browser: Any, node_cluster: NodeCluster,
                                                               tmp_path: Path) -> None:
    node = _node(node_cluster, tmp_path)
    r = _r(node_cluster)
    r.rpush("resque:queue:work", encode_job("flaky", "work", [{"n": 7}]))
    wait_until(lambda: r.llen("resque:failed") == 1, 10, message="flaky's first run to fail")
    p = Page(browser, node)
    page = p.open("#/failed")
    retry = page.locator("button[data-action='failed.retry']")
    assert retry.is_disabled()  # the token is configured but not entered yet
    p.use_token(TOKEN)
    page.wait_for_selector("button[data-action='failed.retry']:not([disabled])")
    page.click("button[data-action='failed.retry']")
    wait_until(lambda: r.lrange("uitest:ran", 0, -1) == ['{"n": 7}'], 10, message="the retried job to run")
    page.wait_for_selector("#notice:not([hidden])")
    assert "done" in (page.locator("#notice").text_content() or "")
    page.wait_for_selector("text=No failed jobs.")
    assert r.llen("resque:failed") == 0
    assert p.errors == []
    p.close()


def test_without_a_token_actions_are_disabled_and_refused(browser: Any, node_cluster: NodeCluster,
                                                          tmp_path: Path) -> None:
    node = _node(node_cluster, tmp_path, token=None)
    r = _r(node_cluster)
    _seed(r)
    p = Page(browser, node)
    page = p.open("#/")
    p.use_token(TOKEN)  # whatever the user types, this node has no token: read-only
    for hash_ in ("#/queues/parked", "#/delayed", "#/periodic", "#/failed", "#/locks"):
        page = p.open(hash_)
        buttons = page.locator("button[data-action]")
        assert buttons.count() > 0, hash_
        for i in range(buttons.count()):
            assert buttons.nth(i).is_disabled(), (hash_, buttons.nth(i).text_content())
        assert "no dashboard token" in (buttons.first.get_attribute("title") or "")
    status = page.evaluate("""async (token) => (await fetch('/ui/api/actions/queue.clear', {method: 'POST',
        headers: {'Content-Type': 'application/json', 'X-Corral-Token': token},
        body: JSON.stringify({queue: 'parked'})})).status""", TOKEN)
    assert status == 403
    assert r.llen("resque:queue:parked") == 5
    assert "read-only" in (page.locator("#foot-node").text_content() or "")
    assert p.errors == [] or all("403" in e for e in p.errors), p.errors
    p.close()


def test_pause_stops_occurrences_and_resume_does_not_back_fill(browser: Any, node_cluster: NodeCluster,
                                                                tmp_path: Path) -> None:
    node = _node(node_cluster, tmp_path)
    r = _r(node_cluster)
    r.delete("uitest:ticks")
    wait_until(lambda: r.llen("uitest:ticks") >= 2, 10, message="tick to run every second")
    p = Page(browser, node)
    page = p.open("#/periodic")
    p.use_token(TOKEN)
    row = page.locator("tr", has=page.locator("code", has_text="tick"))
    row.locator("button[data-action='periodic.pause']").click()
    row.locator(".tag.paused").wait_for()
    assert r.hget("resque:corral:periodic:tick", "paused") == "1"
    time.sleep(0.5)  # a run popped just before the pause may still finish
    at_pause = r.llen("uitest:ticks")
    time.sleep(4.0)
    assert r.llen("uitest:ticks") == at_pause, "occurrences kept coming while paused"
    row.locator("button[data-action='periodic.resume']").click()
    resumed = time.monotonic()
    row.locator("button[data-action='periodic.pause']").wait_for()
    wait_until(lambda: r.llen("uitest:ticks") > at_pause, 5, 0.02, message="tick to run again after resume")
    time.sleep(max(0.0, 1.2 - (time.monotonic() - resumed)))
    after = r.llen("uitest:ticks") - at_pause
    assert p.errors == []
    p.close()
    # 1 s slots: at most 2 fall in the 1.2 s after resuming; the 4 s of paused slots must not be enqueued
    if after > 2:
        pytest.xfail(f"resume back-filled: {after} runs within 1.2 s of resuming after a 4.5 s pause "
                     "(enqueue_recurrent_job back-fills today: issue 14)")
    assert after <= 2


def test_hostile_names_render_as_text(browser: Any, node_cluster: NodeCluster, tmp_path: Path) -> None:
    node = _node(node_cluster, tmp_path)
    r = _r(node_cluster)
    _seed(r)
    r.rpush("resque:queue:parked", encode_job(HOSTILE_TASK, "parked", [{"x": "<b>args</b>"}]))
    p = Page(browser, node)
    page = p.open("#/periodic")
    assert page.locator("main code", has_text=HOSTILE_TASK).count() == 1
    assert page.locator("main script").count() == 0 and page.locator("main i").count() == 0
    page = p.open("#/failed")
    assert page.locator("main code", has_text=HOSTILE_FAILED_TASK).count() == 1
    assert page.locator("main img").count() == 0 and page.locator("main b").count() == 0
    page = p.open("#/queues/parked")
    assert page.locator("main code", has_text=HOSTILE_TASK).count() == 1
    assert page.locator("main b").count() == 0
    assert page.title() == "Corral"
    assert p.errors == []
    p.close()
    assert json.dumps(ui_get(node.http_port, "periodic")).count("<script>") == 1
