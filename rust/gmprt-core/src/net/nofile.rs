//! The process's descriptor limit, raised for servers as Go raises it.

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as Go's runtime does
/// at start (os_linux.go, Go 1.19+): a server should not run out of fds at
/// an arbitrary 1024. Best effort; returns the soft limit now in force.
pub fn raise_nofile_limit() -> Option<libc::rlim_t> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return None;
    }
    if rl.rlim_cur < rl.rlim_max {
        let want = libc::rlimit {
            rlim_cur: rl.rlim_max,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit struct we own. It fails (and
        // changes nothing) if the hard limit is above the kernel's nr_open.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            rl.rlim_cur = rl.rlim_max;
        }
    }
    Some(rl.rlim_cur)
}
