#!/usr/bin/env bash
# lrsweep on other Pythons, installed as over a CUDA image: for each version, a venv holding
# PyPI's torch first, then `pip install -e '.[test]'` with no constraints (the newest releases
# the metadata admits); torch's version and files must be unchanged, then the suite but its slow
# multi-process tests. Needs pyenv's interpreters and the registry (torch with CUDA: ~3 GB).
#   bench/pythons.sh 3.10 3.12 3.13
set -euo pipefail
cd "$(dirname "$0")/.."
for version in "$@"; do
  python=$(ls -d "$HOME"/.pyenv/versions/"$version"*/bin/python3 | head -1)
  env=/tmp/lrsweep-py$version
  rm -rf "$env" && "$python" -m venv "$env"
  "$env/bin/pip" install -q torch==2.13.0
  fingerprint() {
    "$env/bin/pip" freeze | grep -i '^torch=='
    md5sum "$env"/lib/python*/site-packages/torch/lib/libtorch_cpu.so | cut -d' ' -f1
  }
  before=$(fingerprint)
  "$env/bin/pip" install -q -e '.[test]'
  after=$(fingerprint)
  [ "$before" = "$after" ] || { echo "Python $version: torch changed: $before -> $after"; exit 1; }
  echo "== Python $("$env/bin/python" --version): torch kept ($(echo $before | tr '\n' ' '))"
  "$env/bin/pip" list 2>/dev/null | grep -i -E '^(optuna|sqlalchemy|pandas|scikit-learn|numpy) '
  "$env/bin/pytest" -m 'not slow' -n 2 -q -p no:cacheprovider | tail -1
done
