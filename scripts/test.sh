#!/usr/bin/env bash
# Sets up everything from a machine with only Rust and Python, then runs every
# test: the core's unit and stress tests, its loom models, clippy, the wheel
# build, pytest against the installed wheel, the micro-benchmarks run once,
# and the benchmark suite's quick run (every scenario must produce figures;
# nothing is asserted about speed).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The second line: real asyncio libraries that tests/test_aio_libs.py runs on
# gmprt.aio, end to end (issue 12).
python -m pip install -q "maturin>=1.9.4,<2" pytest psutil ruff pytest-benchmark matplotlib mypy \
    aiohttp httpx uvicorn starlette redis asyncpg

# The servers tests/test_aio_libs.py starts (in temp dirs, on loopback), and
# the quick suite's HTTP load client: installed from Debian if missing;
# apt-get update only when something is.
apt_pkgs=()
command -v redis-server >/dev/null || apt_pkgs+=(redis-server)
command -v wrk >/dev/null || apt_pkgs+=(wrk)
# Debian's package also creates the postgres user the tests run it as when
# they run as root (PostgreSQL refuses root).
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || apt_pkgs+=(postgresql)
if [ "${#apt_pkgs[@]}" -gt 0 ]; then
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_pkgs[@]}"
fi

echo "== cargo test (gmprt-core, release)"
cargo test -q -p gmprt-core --release

echo "== cargo test (gmprt-core, release with debug assertions)"
# Every other cargo run is --release, where debug_assert! compiles to
# nothing: this one keeps the optimiser (the stress tests need it) and turns
# the core's stated preconditions back into checks.
RUSTFLAGS="-C debug-assertions" CARGO_TARGET_DIR=target/debug-assertions \
    cargo test -q -p gmprt-core --release

echo "== cargo test (gmprt-loadgen)"
cargo test -q -p gmprt-loadgen --release

echo "== loom models"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
    cargo test -q -p gmprt-core --release --lib loom_tests

echo "== lint"
cargo fmt --all --check
cargo clippy -q --workspace --all-targets -- -D warnings
ruff check python tests benches examples
ruff format --check benches

echo "== wheel"
# .cargo/config.toml builds without PyO3's reference pool and leaks a `Py`
# dropped detached; the tested wheel aborts instead (RUSTFLAGS replaces the
# config's flags), so such a drop fails the tests rather than leaking.
rm -rf dist
RUSTFLAGS="--cfg pyo3_disable_reference_pool" CARGO_TARGET_DIR=target/wheel-abort \
    maturin build -q --release -o dist
python -m pip install -q --force-reinstall --no-deps dist/gmprt-*.whl

echo "== stubs match the binary"
python -m mypy.stubtest gmprt._gmprt --allowlist .mypy-stubtest-allowlist

echo "== a typed user program passes mypy --strict against the stubs"
(cd tests/typed && python -m mypy --strict --no-incremental --cache-dir=/dev/null user_program.py)

echo "== pytest"
set +e
python -m pytest -q tests
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
[ "$rc" -eq 0 ] || exit "$rc"

echo "== CPython's asyncio test suite on gmprt.aio"
# Fails on a test that does not pass and is not in
# tests/aio_cpython/expected_failures.txt (each listed with its reason).
python tests/aio_cpython/run.py

echo "== micro-benchmarks, each run once"
python -m pytest -q benches

echo "== benchmark suite, quick run"
python benches/suite.py --quick
