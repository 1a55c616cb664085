#!/usr/bin/env bash
# Builds the release wheel and the load generator, then runs the whole
# benchmark suite (benches/suite.py): every scenario of BENCHMARKS.md, gmprt
# against asyncio, uvloop, threading and Go's own echo server (Debian's
# golang-go, installed when missing; the HTTP load client is Debian's wrk,
# likewise), each contender in its own process, in one run. Results land in
# benches/results/. Arguments go to suite.py (--quick, --only SCENARIO...,
# --readme).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q "maturin>=1.9.4,<2" psutil matplotlib pytest-benchmark aiohttp uvicorn starlette
python -m pip install -q uvloop || echo "uvloop did not install: the suite runs without it"
rm -rf dist
maturin build -q --release -o dist
python -m pip install -q --force-reinstall --no-deps dist/gmprt-*.whl
cargo build -q --release -p gmprt-loadgen
SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
if ! command -v wrk >/dev/null && command -v apt-get >/dev/null; then
    # The HTTP load client of the aio_http scenario; without it
    # benches/aio_http.py skips the scenario with a note.
    $SUDO apt-get install -y -q wrk >/dev/null ||
        echo "wrk did not install: the aio_http scenario is skipped"
fi
if ! command -v go >/dev/null; then
    # Go's echo server is a contender in the echo scenario; without a
    # toolchain benches/echo.py skips it with a note.
    if command -v apt-get >/dev/null; then
        $SUDO apt-get install -y -q golang-go >/dev/null ||
            echo "golang-go did not install: the echo scenario runs without Go"
    fi
fi

python benches/suite.py "$@"
