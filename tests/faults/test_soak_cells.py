"""docs/FAULTS.md F16 (soak) and F17 (randomized nemesis) at CI length: two minutes each.

Both run `tests/faults/soak.py`'s `soak()` (the same code as `python -m tests.faults.soak`):
one Redis (AOF, `appendfsync always`), three audited `corral node`s with docs/FAULTS.md §1's timing, a
seeded producer at the soak's target load (20 enqueues/s, 1 in 5 delayed by 1-10 s, job run
times lognormal with a median of ~80 ms and a tail to 5 s; 1 in 20 a copy of a JobLock task on
one of 2 keys, 1 in 20 a delayed job of a QueueLock + DelayQueueLock task), the checker at the end.
Both cells assert 0 JobLock violations (two runs of one lock key at once) and 0 lost hooked
delayed jobs, and that the load had both.

- F16: no faults; the load comes in 30 s cycles ending with 12 s of rest. Asserted: the
  checker's invariants (0 lost, 0 duplicated, 0 unexpected, 0 accepted stale writes, 0 duplicate
  slots, no missed catch-up slots, no flaps), 0 leadership changes, lateness p99 <= 25 ms in the
  idle stretches (plus the host's own wake-up lag there, tests/faults/hostlag.py), and Redis key
  count and each node's RSS flat (quiet samples at the end of
  each stretch, after the first) - see soak.py for the slack allowed.
- F17: a seeded fault every 20-60 s (kill -9 / SIGTERM / SIGSTOP the leader, kill -9 a worker,
  SIGSTOP redis-server 8 s, SIGKILL + restart redis-server), continuous load. Asserted: every
  invariant, each failover <= L + 1 s = 6 s, each handoff <= 0.5 s, each recovery <= 15 s,
  overlap <= 0, duplicates <= jobs in flight on the nodes hit.

CI runs fixed seeds only, so a red run is the code's doing, not the dice's: F16 one seed, F17
every seed that ever found a problem (`REGRESSION_SEEDS`, each with what it found; add a seed
there whenever a `make soak` run fails, never remove one). New random seeds run in `make soak`
(`python -m tests.faults.soak`), which prints the seed and the command replaying it.
CORRAL_SOAK_SEED=<n> runs that seed instead (both cells), to replay a failure under pytest.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.harness import redis_binary
from tests.faults.soak import SoakResult, soak
from tests.support import missing

MINUTES = 2.0


F16_SEED = 16

# Every F17 seed that ever failed, with what it found; each runs in CI as a regression seed.
REGRESSION_SEEDS = {
    # sigstop-leader: the harness stamped the resume after SIGCONT, so the resumed node's step-down
    # (its lease check) counted as leading on for 10 s (checker: overlap for a frozen leader); a
    # job completed twice (its late ack refused: now logged, counted and reported as at-least-once)
    507224: "overlap +10.042 s after sigstop-leader; 1 job completed twice",
}


def run_soak(tmp_path: Path, name: str, *, nemesis: bool, seed: int) -> SoakResult:
    if redis_binary() is None:
        missing("redis-server is not installed")
    env = os.environ.get("CORRAL_SOAK_SEED", "").strip()
    seed = int(env) if env else seed
    print(f"\n{name}: seed {seed} (CORRAL_SOAK_SEED={seed} replays this run)")
    result = soak(MINUTES, seed, nemesis=nemesis, workdir=tmp_path / name, log=lambda line: print(line, flush=True))
    assert result.report is not None, f"{name}: no report; seed {seed}"
    report = result.report
    assert report.lock_runs and report.hooked_delayed, f"{name}: no JobLock or hooked delayed load\n" + result.figures()
    assert report.lock_overlaps == [] and report.lost_hooked == [], f"{name}: " + result.describe()
    return result


def test_f16_soak(tmp_path: Path) -> None:
    result = run_soak(tmp_path, "F16", nemesis=False, seed=F16_SEED)
    assert result.report is not None
    assert result.report.acknowledged > 0, result.describe()
    assert not result.problems, "F16: " + result.describe()
    assert not result.notes, "F16: " + result.describe()  # idle lateness, keys and RSS all measured


@pytest.mark.parametrize("seed", sorted(REGRESSION_SEEDS))
def test_f17_nemesis(tmp_path: Path, seed: int) -> None:
    result = run_soak(tmp_path, "F17", nemesis=True, seed=seed)
    assert result.injected, "F17: no fault was injected\n" + result.figures()
    assert not result.problems, f"F17 (seed {seed} once found: {REGRESSION_SEEDS[seed]}): " + result.describe()
