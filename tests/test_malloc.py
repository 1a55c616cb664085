"""The process's malloc arenas (glibc): Python Gs allocate on whichever M
runs them, and `_gmprt`'s import puts every thread on one arena (see
rust/gmprt-py/src/malloc.rs) unless the environment chose."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="glibc's arenas",
)

# Gs on two Ps churn large buffers, then glibc lists its arenas' heaps.
CHURN = """
import ctypes, sys
import gmprt

async def churn():
    for _ in range(200):
        b = bytearray(16384)
        b.extend(bytes(16384))
        del b[:20000]
        await gmprt.sleep(0)

async def main():
    gs = [gmprt.go(churn) for _ in range(8)]
    for g in gs:
        await g

gmprt.run(main, procs=2)
libc = ctypes.CDLL(None)
sys.stdout.flush()
libc.malloc_info(0, ctypes.c_void_p.in_dll(libc, "stdout"))
libc.fflush(None)
"""


def heaps(arena_max: str | None) -> int:
    """How many heaps glibc lists after CHURN, run with that
    MALLOC_ARENA_MAX (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    if arena_max is not None:
        env["MALLOC_ARENA_MAX"] = arena_max
    r = subprocess.run(
        [sys.executable, "-c", CHURN], capture_output=True, text=True, timeout=60, env=env
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.count("<heap nr=")


def test_every_m_allocates_from_one_arena():
    assert heaps(None) == 1


def test_an_arena_count_the_environment_chose_is_kept():
    assert heaps("8") > 1
