#!/usr/bin/env bash
# Writes the hashed locks from pyproject.toml (uv: `python3 -m pip install uv`):
#   requirements/test.lock     runtime + `embedded` + `test` extras + build backend: .venv, make test/up, CI
#   requirements/runtime.lock  runtime dependencies only (the image), the same versions as test.lock
#   requirements/build.lock    the build backend the image builds Corral's wheel with, same versions
# `bash scripts/lock.sh` keeps every pin that still satisfies pyproject.toml (after adding a
# dependency); `bash scripts/lock.sh --upgrade` (make lock) moves everything to the newest releases.
# Target: CPython 3.11 on x86_64 manylinux (the image's and CI's platform).
set -euo pipefail
cd "$(dirname "$0")/.."
upgrade=()
[ "${1:-}" = "--upgrade" ] && upgrade=(--upgrade)
target=(--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28)
command -v uv >/dev/null || { echo "lock: uv is not installed (python3 -m pip install uv)" >&2; exit 1; }
uv pip compile -q pyproject.toml requirements/build.in --extra test "${target[@]}" ${upgrade[@]+"${upgrade[@]}"} \
  -o requirements/test.lock
# The image's locks are cut from test.lock (constraints), so it runs exactly what the suite tested.
uv pip compile -q pyproject.toml "${target[@]}" --constraint requirements/test.lock -o requirements/runtime.lock
uv pip compile -q requirements/build.in "${target[@]}" --constraint requirements/test.lock -o requirements/build.lock
echo "lock: wrote requirements/{test,runtime,build}.lock; now run make test and commit them"
