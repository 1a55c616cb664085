//! One malloc arena for the process (glibc), set when `_gmprt` is
//! imported, before the runtime starts a thread.
//!
//! glibc gives each new thread its own arena, and trims a thread arena's
//! free top (and deletes its emptied heaps) eagerly. A Python G's objects
//! are allocated on whichever M runs it, so a `gmprt.aio` loop's are spread
//! over the Ms' arenas, where asyncio's own buffers churn them: a
//! `StreamReader` grows its `bytearray` by each read and shrinks it by each
//! `read()`, and at 1,000 connections × 16 KiB the arenas' tops were
//! trimmed and regrown about once per message, 3.8 page faults per
//! message (`perf stat -e page-faults` on the server; asyncio's loop, on
//! the main thread's arena: 0.06). With every thread on the main arena, as
//! in a single-threaded asyncio process: 0.00, and the server's CPU per
//! message 62.7 -> 51.4 µs (`gmprt.aio-streams` echo, C=1000 × 16 KiB,
//! medians of 3 interleaved A/B rounds). Python allocates under the GIL anyway, and the
//! core's small allocations come from each thread's tcache, which glibc
//! keeps per thread whatever the arena.
//!
//! A process that chose its arenas itself (`MALLOC_ARENA_MAX`, or
//! `glibc.malloc.arena_max` in `GLIBC_TUNABLES`) keeps its choice.
//! Threads that allocated before the import keep their arenas.

/// Sets `M_ARENA_MAX` to 1 unless the environment chose (module docs).
pub(crate) fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let chosen = std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("malloc.arena_max"));
        if !chosen {
            // SAFETY: mallopt only sets a malloc parameter; it takes the
            // allocator's own lock.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 1);
            }
        }
    }
}
