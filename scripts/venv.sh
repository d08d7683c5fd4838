#!/usr/bin/env bash
# Creates (or updates) the repo's virtualenv from a lock: `bash scripts/venv.sh requirements/test.lock`.
# Every package comes from the lock (exact versions, sha256 hashes required), then Corral itself is
# installed editable without dependencies. A stamp makes a rerun with the same lock a no-op.
# CORRAL_VENV overrides the location (default <repo>/.venv); PYTHON is the interpreter that creates it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
lock=${1:?usage: scripts/venv.sh LOCKFILE}
PYTHON=${PYTHON:-python3}
venv=${CORRAL_VENV:-$root/.venv}
vpy="$venv/bin/python"
log() { printf 'venv: %s\n' "$*"; }
sha() { sha256sum "$@" | sha256sum | cut -c1-16; }

mkdir -p .tools/stamps
stamp=.tools/stamps/venv-$(basename "$lock")-$(sha "$lock" pyproject.toml)
installed_here() {
  # The editable install must point at this checkout (CI clones elsewhere).
  "$vpy" -I - "$root" <<'PY' 2>/dev/null
import importlib.metadata as md, json, pathlib, sys
url = json.loads(md.distribution("corral").read_text("direct_url.json") or "{}").get("url", "")
sys.exit(0 if url == pathlib.Path(sys.argv[1]).resolve().as_uri() else 1)
PY
}
if [ -x "$vpy" ] && [ -e "$stamp" ] && installed_here; then
  log "$venv already matches $lock"
  exit 0
fi
[ -x "$vpy" ] || { log "creating $venv"; "$PYTHON" -m venv "$venv"; }
flags=(--disable-pip-version-check --root-user-action=ignore -q)
log "installing $lock into $venv (hashes required)"
"$vpy" -m pip install "${flags[@]}" --require-hashes --no-deps -r "$lock"
log "installing corral editable, without dependencies (they came from the lock)"
"$vpy" -m pip install "${flags[@]}" --no-deps --no-build-isolation -e .
# Sync, not just install: a package an older lock had (or someone pip-installed) goes, so the venv
# holds exactly the lock (tests/unit/test_lock.py checks it).
extra=$("$vpy" -I - "$lock" <<'PY'
import importlib.metadata as md, re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
pinned = {norm(m.group(1)) for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", open(sys.argv[1]).read(), re.M)}
print(" ".join(sorted({d.metadata["Name"] for d in md.distributions()
                       if norm(d.metadata["Name"]) not in pinned | {"pip", "corral"}})))
PY
)
if [ -n "$extra" ]; then
  log "removing packages the lock does not pin: $extra"
  # shellcheck disable=SC2086  # one word per package
  "$vpy" -m pip uninstall "${flags[@]}" --yes $extra
fi
"$vpy" -m pip check >/dev/null
rm -f .tools/stamps/venv-"$(basename "$lock")"-*
touch "$stamp"
