#!/usr/bin/env bash
# Builds the release wheel into .venv and runs the benchmarks: gmprt against
# asyncio and threading, each contender in its own process, in one run.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q "maturin>=1.9.4,<2" psutil
rm -rf dist
maturin build -q --release -o dist
python -m pip install -q --force-reinstall --no-deps dist/gmprt-*.whl

python benches/spawn.py "$@"
python benches/procs.py
python benches/chan.py
