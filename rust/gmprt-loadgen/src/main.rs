//! `gmprt-loadgen`: see `gmprt-loadgen --help` and the library docs.

use std::process::ExitCode;

use gmprt_loadgen::args::{self, Parsed, USAGE};

/// Raises the soft open-file limit to the hard limit (as Go's runtime does),
/// so thousands of connections fit.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit; failure only leaves the old limit.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
}

fn main() -> ExitCode {
    let cfg = match args::parse(std::env::args().skip(1)) {
        Ok(Parsed::Run(cfg)) => cfg,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("gmprt-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    raise_nofile_limit();
    let report = match gmprt_loadgen::run(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gmprt-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    if cfg.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.errors.total() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
