#!/usr/bin/env bash
# Copy the monitoring files the chart ships from deploy/ into helm/corral/files/.
# Helm reads only files inside the chart, so the chart keeps copies; tests/chart fails when a
# copy differs from its source. Run this after changing deploy/prometheus/rules.yml or
# deploy/grafana/corral-dashboard.json. `--check` only reports differences (exit 1 if any).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$repo/helm/corral/files"
check=0
[ "${1:-}" = "--check" ] && check=1

# source (relative to the repo) → file name in the chart
pairs=(
  "deploy/prometheus/rules.yml:rules.yml"
  "deploy/grafana/corral-dashboard.json:dashboards/corral-dashboard.json"
)

status=0
mkdir -p "$dest"
for pair in "${pairs[@]}"; do
  src="$repo/${pair%%:*}"
  out="$dest/${pair#*:}"
  if [ ! -f "$src" ]; then
    echo "sync-chart-files: ${pair%%:*} does not exist yet; keeping ${out#"$repo"/}" >&2
    continue
  fi
  if [ -f "$out" ] && cmp -s "$src" "$out"; then
    continue
  fi
  if [ "$check" = 1 ]; then
    echo "sync-chart-files: ${out#"$repo"/} differs from ${pair%%:*}" >&2
    status=1
  else
    mkdir -p "$(dirname "$out")"
    cp "$src" "$out"
    echo "sync-chart-files: copied ${pair%%:*} -> ${out#"$repo"/}"
  fi
done
exit "$status"
