"""The README example: coroutine Gs, a sync G that blocks, results via await."""

import gmprt


async def worker(n):
    await gmprt.sleep(0)  # yield to the other Gs
    return n * n


def blocking(g):
    return g.join(timeout=5)  # a sync G: its P goes to another M while it waits


async def main():
    gs = [gmprt.go(worker, i) for i in range(10)]
    total = sum([await g for g in gs])
    return total + await gmprt.go(blocking, gmprt.go(worker, 3))


if __name__ == "__main__":
    print(gmprt.run(main))  # 294
