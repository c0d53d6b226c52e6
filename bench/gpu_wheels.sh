#!/usr/bin/env bash
# On a CPU machine with the registry: prepare what bench/gpu.sh needs on a GPU machine that has
# Python 3.12 and torch but no registry, in .gpu/ (ignored by git, carried to the machine):
#   .gpu/wheels/       wheels of what such an image lacks (Optuna, SQLAlchemy, the dashboard...)
#   .gpu/ionosphere.csv  the default data (the GPU machine cannot fetch it; never committed)
# Usage: bench/gpu_wheels.sh [python version, default 3.12]   (after make install)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.12}
rm -rf .gpu/wheels && mkdir -p .gpu/wheels
# Each with --no-deps, at the version constraints.txt pins where it has one. The image has torch,
# numpy, pandas, scikit-learn, scipy, matplotlib, grpcio, protobuf, PyYAML, tqdm, pytest and
# hypothesis; grpcio and protobuf come too, in case the image's are older than lrsweep needs.
lacking="optuna optuna-dashboard sqlalchemy alembic mako colorlog greenlet bottle psycopg
psycopg-binary plotly narwhals grpcio protobuf"
for name in $lacking; do
  pin=$(grep -i "^$name==" constraints.txt || true)
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "$version" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpu/wheels "${pin:-$name}"
done
data=${IONOSPHERE_CSV:-../shared/data/ionosphere.csv}
cp "$data" .gpu/ionosphere.csv
du -sh .gpu
