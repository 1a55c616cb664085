//! Command-line parsing (no dependencies: the option set is small).

use std::time::Duration;

use crate::Config;

/// Usage text printed by `--help`.
pub const USAGE: &str = "\
gmprt-loadgen: closed-loop TCP echo load generator

Each connection keeps exactly one message in flight: it sends SIZE bytes,
reads back exactly SIZE bytes, checks every byte against the pattern that
connection sent, and sends the next message. Runs for --warmup seconds
unmeasured, then DURATION seconds measured.

USAGE:
    gmprt-loadgen --port PORT [OPTIONS]

OPTIONS:
        --host HOST            server host [default: 127.0.0.1]
        --port PORT            server port (required unless --unix)
        --unix PATH            connect to the Unix stream socket at PATH instead
    -c, --connections N        concurrent connections [default: 100]
    -s, --size BYTES           message size; k/K and m/M suffixes are KiB/MiB [default: 1024]
    -d, --duration SECONDS     measured time [default: 5]
        --warmup SECONDS       unmeasured load before the measurement [default: 1]
    -t, --threads N            event-loop threads [default: 1]
        --connect-timeout SECONDS
                               give up on connections not made by then [default: 10]
        --pid PID              report the CPU time (user + system) process PID
                               spends in the measured window, and per message,
                               read from /proc/PID/stat as the window opens and
                               closes (Linux)
        --lines                each message is a line: SIZE - 1 printable bytes and a
                               newline (for servers that echo line by line)
        --json                 print one JSON object instead of text
    -h, --help                 print this help

Exit status: 0 when no error was counted, 1 when any was (connect failures,
resets, early closes, mismatched bytes), 2 on bad arguments, an address
that cannot be resolved, or a --pid with no /proc/PID/stat to read.
";

/// What the command line asked for.
#[derive(Debug)]
pub enum Parsed {
    /// Run with this configuration.
    Run(Config),
    /// Print [`USAGE`] and exit 0.
    Help,
}

fn seconds(opt: &str, v: &str) -> Result<Duration, String> {
    let s: f64 = v
        .parse()
        .map_err(|_| format!("{opt}: expected seconds, got {v:?}"))?;
    if !s.is_finite() || s < 0.0 {
        return Err(format!("{opt}: must be a non-negative number, got {v:?}"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn count(opt: &str, v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{opt}: expected a positive integer, got {v:?}")),
    }
}

/// Parses a byte count: `1024`, `16k`, `16K`, `16KiB`, `1m`, `1MiB`.
pub fn parse_size(v: &str) -> Result<usize, String> {
    let lower = v.trim().to_ascii_lowercase();
    let (digits, mult) = if let Some(d) = lower
        .strip_suffix("kib")
        .or_else(|| lower.strip_suffix('k'))
    {
        (d, 1024)
    } else if let Some(d) = lower
        .strip_suffix("mib")
        .or_else(|| lower.strip_suffix('m'))
    {
        (d, 1024 * 1024)
    } else {
        (lower.as_str(), 1)
    };
    match digits.parse::<usize>() {
        Ok(n) if n > 0 => n
            .checked_mul(mult)
            .ok_or_else(|| format!("size: too large: {v:?}")),
        _ => Err(format!("size: expected a positive byte count, got {v:?}")),
    }
}

/// Parses the arguments after the program name.
pub fn parse<I, S>(args: I) -> Result<Parsed, String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut cfg = Config::default();
    let mut port = None;
    let mut it = args.into_iter().map(Into::into);
    while let Some(arg) = it.next() {
        // `--opt=value` and `--opt value` are both accepted.
        let (opt, inline) = match arg.split_once('=') {
            Some((o, v)) if o.starts_with("--") => (o.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let flag = |inline: &Option<String>| match inline {
            Some(_) => Err(format!("{opt} takes no value")),
            None => Ok(()),
        };
        match opt.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--lines" => {
                flag(&inline)?;
                cfg.lines = true;
                continue;
            }
            "--json" => {
                flag(&inline)?;
                cfg.json = true;
                continue;
            }
            _ => {}
        }
        let mut value = || -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().ok_or_else(|| format!("{opt} needs a value")),
            }
        };
        match opt.as_str() {
            "--host" => cfg.host = value()?,
            "--unix" => cfg.unix = Some(value()?.into()),
            "--port" => {
                let v = value()?;
                port = Some(
                    v.parse::<u16>()
                        .ok()
                        .filter(|&p| p != 0)
                        .ok_or_else(|| format!("--port: expected 1..65535, got {v:?}"))?,
                );
            }
            "-c" | "--connections" => cfg.connections = count(&opt, &value()?)?,
            "-s" | "--size" => cfg.size = parse_size(&value()?)?,
            "-d" | "--duration" => {
                cfg.duration = seconds(&opt, &value()?)?;
                if cfg.duration.is_zero() {
                    return Err(format!("{opt}: must be more than 0"));
                }
            }
            "--warmup" => cfg.warmup = seconds(&opt, &value()?)?,
            "-t" | "--threads" => cfg.threads = count(&opt, &value()?)?,
            "--connect-timeout" => cfg.connect_timeout = seconds(&opt, &value()?)?,
            "--pid" => {
                let v = value()?;
                cfg.pid = Some(
                    v.parse::<u32>()
                        .ok()
                        .filter(|&p| p != 0)
                        .ok_or_else(|| format!("--pid: expected a process id, got {v:?}"))?,
                );
            }
            _ => return Err(format!("unknown option {arg:?} (see --help)")),
        }
    }
    cfg.port = match (port, &cfg.unix) {
        (Some(p), _) => p,
        (None, Some(_)) => 0,
        (None, None) => return Err("--port is required (see --help)".into()),
    };
    Ok(Parsed::Run(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match parse(args.iter().copied())? {
            Parsed::Run(c) => Ok(c),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults() {
        let c = run(&["--port", "9000"]).unwrap();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 9000);
        assert_eq!(c.connections, 100);
        assert_eq!(c.size, 1024);
        assert_eq!(c.duration, Duration::from_secs(5));
        assert_eq!(c.warmup, Duration::from_secs(1));
        assert_eq!(c.threads, 1);
        assert!(!c.json);
        assert_eq!(c.pid, None);
    }

    #[test]
    fn pid() {
        assert_eq!(
            run(&["--port", "1", "--pid", "4242"]).unwrap().pid,
            Some(4242)
        );
        assert_eq!(run(&["--port", "1", "--pid=7"]).unwrap().pid, Some(7));
        for bad in ["0", "-1", "x", ""] {
            assert!(run(&["--port", "1", "--pid", bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn short_long_and_inline_forms() {
        let c = run(&[
            "--host=::1",
            "--port=1",
            "-c",
            "1000",
            "-s",
            "16k",
            "-d",
            "2.5",
            "--warmup",
            "0",
            "-t",
            "2",
            "--json",
        ])
        .unwrap();
        assert_eq!(c.host, "::1");
        assert_eq!(c.connections, 1000);
        assert_eq!(c.size, 16 * 1024);
        assert_eq!(c.duration, Duration::from_millis(2500));
        assert!(c.warmup.is_zero());
        assert_eq!(c.threads, 2);
        assert!(c.json);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1").unwrap(), 1);
        assert_eq!(parse_size("1KiB").unwrap(), 1024);
        assert_eq!(parse_size("2M").unwrap(), 2 << 20);
        assert!(parse_size("0").is_err());
        assert!(parse_size("k").is_err());
        assert!(parse_size("-3").is_err());
    }

    #[test]
    fn unix_and_lines() {
        let c = run(&["--unix", "/tmp/x.sock", "--lines"]).unwrap();
        assert_eq!(c.unix.as_deref(), Some(std::path::Path::new("/tmp/x.sock")));
        assert!(c.lines);
        assert!(!run(&["--port", "9"]).unwrap().lines);
    }

    #[test]
    fn errors() {
        assert!(run(&[]).unwrap_err().contains("--port is required"));
        assert!(run(&["--port", "0"]).is_err());
        assert!(run(&["--port", "1", "-c", "0"]).is_err());
        assert!(run(&["--port", "1", "-d", "0"]).is_err());
        assert!(run(&["--port", "1", "--warmup", "-1"]).is_err());
        assert!(run(&["--port", "1", "--bogus"]).is_err());
        assert!(run(&["--port"]).unwrap_err().contains("needs a value"));
        assert!(run(&["--port", "1", "--json=yes"]).is_err());
        assert_eq!(run(&["-h"]).unwrap_err(), "help");
    }
}
