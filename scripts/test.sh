#!/usr/bin/env bash
# The README's test command (`make test`, and CI through .ci/run): install the test
# dependencies, lint (ruff, mypy), then run the whole pytest suite against real servers.
#
# Exit code: pytest's when it is not 0 (5, "no tests collected", counts as a failure);
# otherwise 1 when ruff or mypy failed; otherwise 0. Lint failures do not stop the tests, so one
# run reports everything.
#
# Knobs: CORRAL_TEST_TIMEOUT (seconds per test, default 300), CORRAL_TEST_BUDGET (seconds for
# the whole pytest run, default 4800: CI stops a run at 5400), CORRAL_VENV, extra pytest arguments
# after `--` (e.g. `bash scripts/test.sh -- -k proxy`).
set -uo pipefail
cd "$(dirname "$0")/.."
per_test=${CORRAL_TEST_TIMEOUT:-300}
budget=${CORRAL_TEST_BUDGET:-4800}
extra=()
if [ "${1:-}" = "--" ]; then shift; extra=("$@"); fi

say() { printf 'test.sh: %s\n' "$*"; }

if ! bash scripts/install-test-deps.sh; then
  say "installing the test dependencies failed; no tests were run"
  exit 1
fi
# The lock's virtualenv (scripts/venv.sh): the suite and every node it starts run in it.
PYTHON=${CORRAL_VENV:-$(pwd)/.venv}/bin/python

lint_paths=()
for d in cluster node tests bench; do [ -d "$d" ] && lint_paths+=("$d"); done

say "ruff check ${lint_paths[*]}"
"$PYTHON" -m ruff check "${lint_paths[@]}"
ruff_rc=$?

say "mypy (configured in pyproject.toml)"
"$PYTHON" -m mypy
mypy_rc=$?

report=$(mktemp -d)
trap 'rm -rf "$report"' EXIT
say "pytest (per-test timeout ${per_test}s, whole run bounded to ${budget}s)"
# SIGINT at the budget: pytest then runs fixture teardown (stopping its servers) and reports.
timeout --foreground --signal=INT --kill-after=60 "$budget" \
  "$PYTHON" -m pytest -q -p no:cacheprovider -ra --timeout="$per_test" \
  --junitxml="$report/junit.xml" tests ${extra[@]+"${extra[@]}"}
pytest_rc=$?

counts=$("$PYTHON" - "$report/junit.xml" <<'PY' 2>/dev/null
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
failed = total["failures"] + total["errors"]
passed = total["tests"] - failed - total["skipped"]
print(f"{passed} passed, {failed} failed, {total['skipped']} skipped")
PY
)

ok() { [ "$1" -eq 0 ] && echo ok || echo "FAILED (exit $1)"; }
case $pytest_rc in
  0) pytest_word="ok" ;;
  5) pytest_word="FAILED: no tests were collected (exit 5)" ;;
  124) pytest_word="FAILED: the run exceeded its ${budget}s budget" ;;
  *) pytest_word="FAILED (exit $pytest_rc)" ;;
esac
say "ruff $(ok $ruff_rc), mypy $(ok $mypy_rc), pytest $pytest_word"
[ -n "$counts" ] && echo "summary: $counts"

if [ "$pytest_rc" -ne 0 ]; then exit "$pytest_rc"; fi
if [ "$ruff_rc" -ne 0 ] || [ "$mypy_rc" -ne 0 ]; then exit 1; fi
exit 0
