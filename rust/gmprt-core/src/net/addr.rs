//! [`Addr`]: the address of either end of a socket, TCP or Unix, and the
//! conversions to and from the kernel's `sockaddr`.
//!
//! A Unix address is one of three things on Linux (unix(7)): a filesystem
//! path, a name in the abstract namespace (the kernel's `sun_path` starts
//! with a NUL byte; no file exists, the name goes away with the last socket
//! bound to it), or unnamed (a socket that never bound: the usual dialing
//! end). Callers spell an abstract name as a path whose first byte is NUL,
//! as Python's `socket` module and the kernel do, so one `&Path` argument
//! covers both.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use socket2::SockAddr;

/// The address of one end of a [`Conn`](super::Conn) or a
/// [`Listener`](super::Listener).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Addr {
    /// TCP over IPv4 or IPv6.
    Inet(SocketAddr),
    /// A Unix domain socket.
    Unix(UnixAddr),
}

/// A Unix domain socket address (unix(7)).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UnixAddr {
    /// Never bound: the dialing end of most connections.
    Unnamed,
    /// A socket file.
    Path(PathBuf),
    /// A name in Linux's abstract namespace, without the leading NUL.
    Abstract(Vec<u8>),
}

impl Addr {
    /// The TCP address, if this is one.
    pub fn inet(&self) -> Option<SocketAddr> {
        match self {
            Addr::Inet(a) => Some(*a),
            Addr::Unix(_) => None,
        }
    }

    /// The Unix address, if this is one.
    pub fn unix(&self) -> Option<&UnixAddr> {
        match self {
            Addr::Inet(_) => None,
            Addr::Unix(a) => Some(a),
        }
    }

    /// What `getsockname`/`getpeername`/`accept` filled in. A family other
    /// than IPv4, IPv6 or Unix cannot come from the sockets `net` makes or
    /// adopts; it is an `InvalidData` error rather than a panic.
    pub(crate) fn from_sockaddr(sa: &SockAddr) -> io::Result<Addr> {
        if let Some(a) = sa.as_socket() {
            return Ok(Addr::Inet(a));
        }
        if sa.is_unix() {
            return Ok(Addr::Unix(UnixAddr::from_sockaddr(sa)));
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected socket address family {}", sa.family()),
        ))
    }
}

impl UnixAddr {
    /// `path` as the caller spells it: a leading NUL byte names the
    /// abstract namespace, anything else (but the empty path) is a file.
    pub fn new(path: &Path) -> UnixAddr {
        let bytes = path.as_os_str().as_bytes();
        match bytes.split_first() {
            None => UnixAddr::Unnamed,
            Some((0, name)) => UnixAddr::Abstract(name.to_vec()),
            Some(_) => UnixAddr::Path(path.to_path_buf()),
        }
    }

    /// The bytes Python's `socket` and the kernel use for it: the path, a
    /// NUL then the name for an abstract one, nothing for unnamed.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            UnixAddr::Unnamed => Vec::new(),
            UnixAddr::Path(p) => p.as_os_str().as_bytes().to_vec(),
            UnixAddr::Abstract(name) => {
                let mut b = Vec::with_capacity(name.len() + 1);
                b.push(0);
                b.extend_from_slice(name);
                b
            }
        }
    }

    fn from_sockaddr(sa: &SockAddr) -> UnixAddr {
        if let Some(p) = sa.as_pathname() {
            UnixAddr::Path(p.to_path_buf())
        } else if let Some(name) = sa.as_abstract_namespace() {
            UnixAddr::Abstract(name.to_vec())
        } else {
            UnixAddr::Unnamed
        }
    }

    /// The socket file, for a path address.
    pub fn path(&self) -> Option<&Path> {
        match self {
            UnixAddr::Path(p) => Some(p),
            _ => None,
        }
    }
}

/// The `sockaddr_un` for `path` (see [`UnixAddr::new`]); the empty path is
/// Linux's autobind: `bind` picks an unused abstract name. InvalidInput for
/// a path too long for `sun_path` (107 bytes, 108 for an abstract name) or
/// one with a NUL byte inside (the kernel would cut it there).
pub(crate) fn unix_sockaddr(path: &Path) -> io::Result<SockAddr> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.first().is_some_and(|&b| b != 0) && bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a Unix socket path must not contain a NUL byte",
        ));
    }
    SockAddr::unix(path).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "Unix socket path too long ({} bytes; the limit is {})",
                bytes.len(),
                if bytes.first() == Some(&0) { 108 } else { 107 }
            ),
        )
    })
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Inet(a) => a.fmt(f),
            Addr::Unix(a) => a.fmt(f),
        }
    }
}

/// A path as is, an abstract name as `@name` (as `ss` and Go print it,
/// with bytes outside printable ASCII escaped), unnamed as `(unnamed)`.
impl fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddr::Unnamed => f.write_str("(unnamed)"),
            UnixAddr::Path(p) => p.display().fmt(f),
            UnixAddr::Abstract(name) => {
                f.write_str("@")?;
                for c in name.escape_ascii() {
                    fmt::Write::write_char(f, c as char)?;
                }
                Ok(())
            }
        }
    }
}

/// What std's (and mio's) Unix `accept` and `local_addr` return.
impl From<&std::os::unix::net::SocketAddr> for UnixAddr {
    fn from(a: &std::os::unix::net::SocketAddr) -> UnixAddr {
        use std::os::linux::net::SocketAddrExt;
        if let Some(p) = a.as_pathname() {
            UnixAddr::Path(p.to_path_buf())
        } else if let Some(name) = a.as_abstract_name() {
            UnixAddr::Abstract(name.to_vec())
        } else {
            UnixAddr::Unnamed
        }
    }
}

impl From<SocketAddr> for Addr {
    fn from(a: SocketAddr) -> Addr {
        Addr::Inet(a)
    }
}

impl From<UnixAddr> for Addr {
    fn from(a: UnixAddr) -> Addr {
        Addr::Unix(a)
    }
}

/// `path`'s bytes as an `OsStr`, for building a [`UnixAddr`] from bytes.
pub fn unix_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}
