#!/usr/bin/env bash
# Installs everything the test suite needs on a Debian 12 machine that already has Python 3.11
# and Node 20: the servers the fixtures start (redis-server, redis-sentinel, ZooKeeper,
# Prometheus), .venv from requirements/test.lock (Corral and its test extras), node-resque for the
# interop tests, and (when scripts/install-helm.sh exists) Helm for the chart tests.
#
# Idempotent and non-interactive; meant to run as root (CI) and fast on a rerun: apt runs only
# when a package is missing, the venv only when requirements/test.lock or pyproject.toml changed
# or the editable install points elsewhere (scripts/venv.sh), npm only when
# tests/interop/package-lock.json changed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
PYTHON=${PYTHON:-python3}   # the interpreter that creates .venv

log() { printf 'install-test-deps: %s\n' "$*"; }

sha() { sha256sum "$@" | sha256sum | cut -c1-16; }

# --- 1. Debian packages --------------------------------------------------------------------
apt_packages=(redis-server redis-sentinel redis-tools zookeeper prometheus faketime)
# the dashboard's browser tests: Playwright drives this chromium (no browser download)
apt_packages+=(chromium)
command -v npm >/dev/null 2>&1 || apt_packages+=(nodejs npm)

missing=()
for pkg in "${apt_packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { log "not root and no sudo: install ${missing[*]} by hand"; exit 1; }
    sudo=(sudo -n)
  fi
  # Keep maintainer scripts from starting system-wide services (a redis on 6379, a prometheus
  # on 9090): the tests start their own servers on free loopback ports. Only when the machine
  # has no policy of its own, and removed again on exit.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    trap '"${sudo[@]}" rm -f "$policy"' EXIT
  fi
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${apt_packages[@]}"
else
  log "apt: all of ${apt_packages[*]} already installed"
fi

# --- 2. The package and its test extras, from the lock, into .venv ---------------------------
bash scripts/venv.sh "${CORRAL_LOCK:-requirements/test.lock}"
vpy=${CORRAL_VENV:-$root/.venv}/bin/python

# --- 3. node-resque for the interop tests ----------------------------------------------------
interop=tests/interop
npm_stamp=$interop/node_modules/.corral-stamp
want=$(sha "$interop/package.json" "$interop/package-lock.json")
if [ -e "$interop/node_modules/node-resque/package.json" ] && [ "$(cat "$npm_stamp" 2>/dev/null)" = "$want" ]; then
  log "npm: node-resque already installed in $interop"
else
  log "npm: npm ci in $interop"
  # npm ci installs exactly the lockfile (integrity-checked) and removes stale modules.
  (cd "$interop" && npm ci --no-audit --no-fund --loglevel=warn)
  echo "$want" >"$npm_stamp"
fi

# --- 3b. pyres for the mixed-cluster tests, in its own venv ----------------------------------
# pyres 1.5 (2014) needs an old redis-py; its own venv keeps that out of requirements/test.lock.
pyres_venv=$root/.tools/pyres-venv
pyres_stamp=$pyres_venv/.corral-stamp
want=$(sha requirements/pyres.lock)
if [ -x "$pyres_venv/bin/python" ] && [ "$(cat "$pyres_stamp" 2>/dev/null)" = "$want" ]; then
  log "pyres: already installed in $pyres_venv"
else
  log "pyres: installing requirements/pyres.lock into $pyres_venv"
  rm -rf "$pyres_venv"
  "$PYTHON" -m venv "$pyres_venv"
  "$pyres_venv/bin/pip" install --quiet --require-hashes -r requirements/pyres.lock
  echo "$want" >"$pyres_stamp"
fi

# --- 4. Helm and kubectl for the chart tests (another script's job) ------------------------
if [ -f scripts/install-helm.sh ]; then
  PYTHON="$vpy" bash scripts/install-helm.sh
fi

log "done"
