#!/usr/bin/env python3
"""Checks the arithmetic of docs/SCALING.md ("beyond one primary") with a small discrete-event
simulation: nodes with worker slots and one batched ack+fetch call in flight per (node, primary),
primaries that execute one script at a time, queues spread over primaries by a hash or by rate.

    python bench/scale/shards.py                       # the default scenarios, closed form vs simulation
    python bench/scale/shards.py --shards 4 --nodes 24 --rate 240000 --queues 40 --zipf 1.1

Model (µs): a fetch.lua call that hands out k jobs costs the primary c0 + c1·k of CPU, plus ce per
slot record that finds nothing (measured:
bench/drain.py at 1 slot vs 32 slots, see docs/SCALING.md); a job costs its node p of CPU (one
event loop per node process); the network adds rtt per call. A node sends one call per primary at
a time; the slots that finished meanwhile ride the next call (at most 64). Closed form: a primary
carrying J jobs/s at mean batch b is busy U = J·(c1 + c0/b)/10⁶; a node process tops out at 10⁶/p
jobs/s. Nothing here talks to Redis.
"""

from __future__ import annotations

import argparse
import heapq
import random
import zlib
from collections import deque
from dataclasses import dataclass, field

MAX_BATCH = 64


@dataclass
class Params:
    c0: float = 26.0  # µs of primary CPU per fetch.lua call
    c1: float = 11.5  # µs of primary CPU per job in it
    ce: float = 3.0  # µs per slot record that finds nothing (its ack, the idle zset)
    p: float = 30.0  # µs of node CPU per no-op job
    rtt: float = 40.0  # µs of network per call (loopback-ish; a LAN is 100-300)
    slots: int = 32  # per node process


@dataclass
class Primary:
    busy_until: float = 0.0
    busy: float = 0.0
    calls: int = 0
    jobs: int = 0
    backlog: int = 0  # jobs waiting in this primary's queues (None-limited in backlog mode)


@dataclass
class Node:
    cpu_free_at: float = 0.0
    pending: dict[int, list[int]] = field(default_factory=dict)  # primary -> slots waiting for a call
    inflight: dict[int, bool] = field(default_factory=dict)


def assign(queues: list[float], shards: int, how: str) -> list[int]:
    """Queue -> primary: `hash` (crc32 of the name, what a static client-side map gives) or `rate`
    (largest first onto the least loaded primary, what a leader-kept map could do)."""
    if how == "hash":
        return [zlib.crc32(f"queue{i}".encode()) % shards for i in range(len(queues))]
    load = [0.0] * shards
    out = [0] * len(queues)
    for i in sorted(range(len(queues)), key=lambda i: -queues[i]):
        s = min(range(shards), key=lambda s: load[s])
        out[i] = s
        load[s] += queues[i]
    return out


def zipf_rates(total: float, n: int, s: float) -> list[float]:
    w = [1 / (i + 1) ** s for i in range(n)]
    return [total * x / sum(w) for x in w]


def closed_form(rate: float, nodes: int, prm: Params, batch: float, empty_per_job: float = 0.0) -> dict[str, float]:
    per_job = prm.c1 + prm.c0 / batch + prm.ce * empty_per_job
    return {"primary_busy": rate * per_job / 1e6, "primary_max_jobs_s": 1e6 / per_job,
            "node_max_jobs_s": nodes * 1e6 / prm.p, "node_busy": rate * prm.p / (nodes * 1e6)}


def simulate(shard_rates: list[float], nodes: int, prm: Params, seconds: float, split: bool,
             seed: int = 1) -> dict[str, list[float]]:
    """Jobs arrive (Poisson) on each primary's queues. Each slot serves one primary: `split` gives
    each node one primary (node n -> primary n mod S, all its slots), otherwise every node splits
    its slots over all primaries. A slot that finds nothing parks until a job arrives on its
    primary (the enqueue's wake-up). Returns per primary: jobs/s done, CPU busy share, jobs per
    call, slot records per call, mean wait of a job in its queue (µs)."""
    rng = random.Random(seed)
    horizon = seconds * 1e6
    S = len(shard_rates)
    prims = [Primary() for _ in shard_rates]
    records = [0] * S
    arrivals: list[deque[float]] = [deque() for _ in shard_rates]
    parked: list[deque[tuple[int, int]]] = [deque() for _ in shard_rates]
    waits = [0.0] * S
    nds = [Node() for _ in range(nodes)]
    ev: list[tuple[float, int, str, tuple]] = []  # (time, seq, kind, data)
    seq = 0

    def push(t: float, kind: str, data: tuple) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(ev, (t, seq, kind, data))

    for s, lam in enumerate(shard_rates):
        if lam > 0:
            push(rng.expovariate(lam / 1e6), "arrive", (s,))
    for n in range(nodes):
        for k in range(prm.slots):
            push(0.0, "want", (n, k, n % S if split else k % S))

    def send(n: int, s: int, t: float) -> None:
        node = nds[n]
        batch = node.pending.get(s, [])[:MAX_BATCH]
        if not batch or node.inflight.get(s):
            return
        node.pending[s] = node.pending[s][len(batch):]
        node.inflight[s] = True
        push(t + prm.rtt / 2, "call", (n, s, tuple(batch)))

    while ev:
        t, _, kind, data = heapq.heappop(ev)
        if t > horizon:
            break
        if kind == "arrive":
            (s,) = data
            arrivals[s].append(t)
            push(t + rng.expovariate(shard_rates[s] / 1e6), "arrive", (s,))
            if parked[s]:  # the enqueue wakes one idle slot of that primary
                n, k = parked[s].popleft()
                push(t + prm.rtt, "want", (n, k, s))
        elif kind == "want":  # a free slot asks its primary for a job (acking its last one in the same call)
            n, k, s = data
            nds[n].pending.setdefault(s, []).append(k)
            send(n, s, t)
        elif kind == "call":  # the call reaches the primary: FIFO, one script at a time
            n, s, batch = data
            pr = prims[s]
            start = max(t, pr.busy_until)
            got = [arrivals[s].popleft() for _ in range(min(len(batch), len(arrivals[s])))]
            cost = prm.c0 + prm.c1 * len(got) + prm.ce * (len(batch) - len(got))
            pr.busy_until = start + cost
            pr.busy += cost
            pr.calls += 1
            pr.jobs += len(got)
            records[s] += len(batch)
            for a in got:
                waits[s] += start - a
            push(pr.busy_until + prm.rtt / 2, "reply", (n, s, batch, len(got)))
        elif kind == "reply":
            n, s, batch, ngot = data
            node = nds[n]
            node.inflight[s] = False
            for i, k in enumerate(batch):
                if i < ngot:  # run the job on the node's one CPU, then ack it and ask again
                    node.cpu_free_at = max(t, node.cpu_free_at) + prm.p
                    push(node.cpu_free_at, "want", (n, k, s))
                else:
                    parked[s].append((n, k))
            send(n, s, t)
    out: dict[str, list[float]] = {"jobs_s": [], "busy": [], "jobs_per_call": [], "records_per_call": [],
                                   "wait_us": []}
    for s, pr in enumerate(prims):
        out["jobs_s"].append(pr.jobs / seconds)
        out["busy"].append(pr.busy / horizon)
        out["jobs_per_call"].append(pr.jobs / pr.calls if pr.calls else 0.0)
        out["records_per_call"].append(records[s] / pr.calls if pr.calls else 0.0)
        out["wait_us"].append(waits[s] / pr.jobs if pr.jobs else 0.0)
    return out


def scenario(name: str, rate: float, shards: int, nodes: int, queues: int, zipf: float, how: str, prm: Params,
             seconds: float, split: bool = False) -> None:
    qrates = zipf_rates(rate, queues, zipf)
    amap = assign(qrates, shards, how)
    srates = [sum(r for r, s in zip(qrates, amap, strict=True) if s == k) for k in range(shards)]
    sim = simulate(srates, nodes, prm, seconds, split)
    where = "each node on one primary" if split else "every node on every primary"
    print(f"\n{name}: {rate:,.0f} jobs/s over {queues} queues (zipf {zipf}), {shards} primar"
          f"{'y' if shards == 1 else 'ies'} ({how} map), {nodes} nodes x {prm.slots} slots ({where})")
    print("  primary | offered/s | done/s | capacity 10⁶/(c1 + c0/b + ce·e) | busy, simulated | busy, closed form | "
          "b = jobs per call | e = empty records per job | job wait (µs)")
    for s in range(shards):
        b = max(1.0, sim["jobs_per_call"][s])
        e = max(0.0, sim["records_per_call"][s] - sim["jobs_per_call"][s]) / b
        cf = closed_form(sim["jobs_s"][s], nodes, prm, b, e)
        print(f"  {s:7d} | {srates[s]:9,.0f} | {sim['jobs_s'][s]:6,.0f} | {cf['primary_max_jobs_s']:31,.0f} | "
              f"{sim['busy'][s]:15.2f} | {cf['primary_busy']:17.2f} | {sim['jobs_per_call'][s]:17.1f} | {e:26.2f} | "
              f"{sim['wait_us'][s]:13,.0f}")
    hottest = max(srates)
    print(f"  hottest primary offered {hottest:,.0f}/s = {hottest / rate:.0%} of the load; one primary tops out at "
          f"{closed_form(0, nodes, prm, MAX_BATCH)['primary_max_jobs_s']:,.0f}/s at full batches "
          f"({closed_form(0, nodes, prm, 8)['primary_max_jobs_s']:,.0f}/s at 8 jobs per call); nodes top out at "
          f"{nodes * 1e6 / prm.p:,.0f}/s")


def cli() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, help="offered jobs/s in all (default: the built-in scenarios)")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--queues", type=int, default=20)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--map", choices=("hash", "rate"), default="rate")
    ap.add_argument("--split", action="store_true", help="each node serves one primary (node n -> n mod S)")
    ap.add_argument("--seconds", type=float, default=0.5, help="simulated seconds")
    ap.add_argument("--c0", type=float, default=Params.c0)
    ap.add_argument("--c1", type=float, default=Params.c1)
    ap.add_argument("--ce", type=float, default=Params.ce)
    ap.add_argument("--node-cpu", type=float, default=Params.p)
    ap.add_argument("--rtt", type=float, default=Params.rtt)
    ap.add_argument("--slots", type=int, default=Params.slots)
    a = ap.parse_args()
    prm = Params(c0=a.c0, c1=a.c1, ce=a.ce, p=a.node_cpu, rtt=a.rtt, slots=a.slots)
    if a.rate:
        scenario("custom", a.rate, a.shards, a.nodes, a.queues, a.zipf, a.map, prm, a.seconds, a.split)
        return 0
    scenario("one primary at 60,000 jobs/s", 60_000, 1, 4, 20, 1.0, "rate", prm, a.seconds)
    scenario("one primary offered 100,000 jobs/s (past its ceiling)", 100_000, 1, 6, 20, 1.0, "rate", prm, a.seconds)
    scenario("4 primaries, 240,000 jobs/s, hash map", 240_000, 4, 16, 40, 1.0, "hash", prm, a.seconds)
    scenario("4 primaries, 240,000 jobs/s, rate-balanced map", 240_000, 4, 16, 40, 1.0, "rate", prm, a.seconds)
    scenario("4 primaries, 240,000 jobs/s, rate-balanced map, each node on one primary", 240_000, 4, 16, 40, 1.0,
             "rate", prm, a.seconds, split=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
