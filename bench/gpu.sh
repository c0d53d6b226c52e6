#!/usr/bin/env bash
# One command on a GPU machine (Python 3.12 and torch from its image, no registry): install what
# the image lacks from the wheels bench/gpu_wheels.sh left in .gpu/ (offline, torch kept),
# run the GPU tests, then python -m bench.gpu; the tables go to $OUT/gpu.md (or .gpu/gpu.md).
# Sized to finish in about 6 minutes on one H200, so a second try fits in a 15-minute lease.
#   bench/gpu.sh [extra bench.gpu arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
results=${OUT:-.gpu}/gpu.md
export IONOSPHERE_CSV=${IONOSPHERE_CSV:-$PWD/.gpu/ionosphere.csv}
export PYTHONUNBUFFERED=1

# Into the image's own environment (a venv over it would not see a venv's packages): what it
# lacks, from the wheels; what it has, torch first, stays.
PYTHON=$python ./install-keeping-torch.sh -q --no-index --find-links .gpu/wheels \
  --no-build-isolation .
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'

{ echo "# bench/gpu.sh, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"; echo; } > "$results"
echo '```' >> "$results"
timeout 120 "$python" -m pytest tests/test_gpu.py -p no:cacheprovider -q -rs 2>&1 \
  | tee -a "$results" || echo "GPU tests failed or timed out (exit ${PIPESTATUS[0]})" | tee -a "$results"
echo '```' >> "$results"
timeout 270 "$python" -m bench.gpu --service-seconds 45 --out "$results" "$@"
