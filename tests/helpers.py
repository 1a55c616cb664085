"""Helpers shared by the test modules."""

import gmprt

# Cap for polling loops that spin on `await gmprt.sleep(0)`: large enough
# never to be reached by a working runtime, small enough to end a broken one.
SPIN_CAP = 5_000_000


async def spin_until(pred, cap=SPIN_CAP):
    """Yield until pred() is true; fail (not hang) after `cap` yields."""
    for _ in range(cap):
        if pred():
            return
        await gmprt.sleep(0)
    raise AssertionError("condition not reached: a G that should run never did")
