#!/usr/bin/env bash
# Install lrsweep into an environment that already has torch (a CUDA image, a cluster's module),
# keeping that torch: its exact installed version becomes a pip constraint, so pip can neither
# upgrade it nor swap it for PyPI's build (a multi-GB CUDA download). Checked again afterwards.
#   ./install-keeping-torch.sh [pip install arguments]    (default: this checkout)
#   PYTHON=/opt/venv/bin/python ./install-keeping-torch.sh -c pins.txt .
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
pins=$(mktemp)
trap 'rm -f "$pins"' EXIT

installed_torch() {
  "$python" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || {
    echo "install-keeping-torch: no torch in $python's environment; install the torch build" \
      "for your hardware first (or use pip install -c constraints.txt)" >&2
    exit 2
  }
}

before=$(installed_torch)
echo "torch==$before" > "$pins"
if [ $# -eq 0 ]; then set -- "$here"; fi
"$python" -m pip install -c "$pins" "$@"
after=$(installed_torch)
if [ "$after" != "$before" ]; then
  echo "install-keeping-torch: torch changed from $before to $after" >&2
  exit 1
fi
echo "install-keeping-torch: torch $after kept"
