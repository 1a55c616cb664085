//! gmprt-core's `net` over Unix stream sockets, and adopting sockets made
//! elsewhere, driving Rust-native Gs on a real `Sched`: echo over a path
//! and an abstract name, the socket file's removal on close, dial errors
//! and a dial that waits out a full backlog, accept backoff, and
//! `from_fd` for every kind with its refusals. Every wait is bounded.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::mpsc::{self};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use gmprt_core::net::{self, Addr, Conn, Dial, IoWait, Listener, UnixAddr};
use gmprt_core::Step;
use socket2::{Domain, SockAddr, Socket, Type};

#[macro_use]
mod common;
use common::{fds_exclusive, fds_shared, finish_io, go, new_sched, recv, wait_until, DEADLINE};

/// A fresh directory for socket files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "gmprt-unix-{}-{}",
            std::process::id(),
            // Only uniqueness is needed: no other memory is published.
            N.fetch_add(1, Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An abstract name no other test (or process) uses.
fn abstract_name(tag: &str) -> PathBuf {
    let mut b = vec![0u8];
    b.extend_from_slice(format!("gmprt-test-{}-{tag}", std::process::id()).as_bytes());
    net::unix_path(&b).to_path_buf()
}

fn in_ms(ms: u64) -> Option<Instant> {
    Some(Instant::now() + Duration::from_millis(ms))
}

/// A G that accepts one connection on `ln` and echoes it until EOF.
fn echo_server(s: &Arc<gmprt_core::Sched>, ln: Arc<Listener>, peer: mpsc::Sender<Addr>) {
    let sched = s.clone();
    let mut wait = IoWait::default();
    go(s, move |cx| {
        let (conn, addr) = await_io!(cx, ln.poll_accept(cx.sched(), &mut wait), wait).unwrap();
        let _ = peer.send(addr);
        let (mut rwait, mut wwait) = (IoWait::default(), IoWait::default());
        let (mut buf, mut have, mut sent) = (vec![0u8; 8192], 0, 0);
        go(&sched, move |cx| loop {
            if have > 0 {
                await_io!(
                    cx,
                    conn.poll_send_all(cx.sched(), &buf[..have], &mut sent, &mut wwait),
                    wwait
                )
                .unwrap();
                (have, sent) = (0, 0);
            }
            match await_io!(cx, conn.poll_recv(cx.sched(), &mut buf, &mut rwait), rwait) {
                Ok(0) | Err(_) => {
                    conn.close();
                    return Step::Done;
                }
                Ok(n) => have = n,
            }
        });
        Step::Done
    });
}

/// Dials `path` from a G, which starts a writer G (sends `msg`, then
/// half-closes) and reads the echo to EOF meanwhile; returns the echo and
/// the dialing end's local and peer addresses.
fn dial_and_echo(s: &Arc<gmprt_core::Sched>, path: &Path, msg: Vec<u8>) -> (Vec<u8>, Addr, Addr) {
    let (tx, rx) = mpsc::channel();
    let mut dial = Dial::unix(path, in_ms(DEADLINE.as_millis() as u64)).unwrap();
    let (mut conn, mut got) = (None::<Arc<Conn>>, Vec::new());
    let (mut wait, mut buf) = (IoWait::default(), Vec::new());
    let sched = s.clone();
    let mut msg = Some(msg);
    go(s, move |cx| loop {
        let Some(c) = conn.as_ref() else {
            let c = Arc::new(await_io!(cx, dial.poll(cx.sched()), dial).expect("dial"));
            let (w, msg) = (c.clone(), msg.take().unwrap());
            let (mut wwait, mut sent) = (IoWait::default(), 0);
            go(&sched, move |cx| {
                await_io!(
                    cx,
                    w.poll_send_all(cx.sched(), &msg, &mut sent, &mut wwait),
                    wwait
                )
                .expect("send");
                w.close_write().expect("close_write");
                Step::Done
            });
            conn = Some(c);
            continue;
        };
        match await_io!(
            cx,
            c.poll_recv_vec(cx.sched(), &mut buf, 4096, &mut wait),
            wait
        ) {
            Ok(0) => {
                let addrs = (c.local_addr().unwrap(), c.peer_addr().unwrap());
                let _ = tx.send((std::mem::take(&mut got), addrs.0, addrs.1));
                c.close();
                return Step::Done;
            }
            Ok(_) => got.extend_from_slice(&buf),
            Err(e) => panic!("recv: {e}"),
        }
    });
    recv(&rx, "the echo")
}

fn message(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

// ===== echo, addresses, the socket file =====

/// Echo over a socket file (more than the socket buffers hold, so both
/// sides park), the addresses of both ends, and the file's removal when
/// the listener closes.
#[test]
fn echo_over_a_path_and_the_file_goes_on_close() {
    let _fds = fds_shared();
    let dir = TempDir::new();
    let path = dir.path("echo.sock");
    let s = new_sched(2);
    let ln = Arc::new(Listener::bind_unix(&path, 128).unwrap());
    assert!(ln.is_unix());
    assert_eq!(ln.local_addr(), &Addr::Unix(UnixAddr::Path(path.clone())));
    assert_eq!(ln.tcp_addr(), None);
    let (peer_tx, peer_rx) = mpsc::channel();
    echo_server(&s, ln.clone(), peer_tx);
    let msg = message(512 * 1024);
    let (got, local, peer) = dial_and_echo(&s, &path, msg.clone());
    assert!(
        got == msg,
        "echo differs ({} of {} bytes)",
        got.len(),
        msg.len()
    );
    assert_eq!(local, Addr::Unix(UnixAddr::Unnamed));
    assert_eq!(peer, Addr::Unix(UnixAddr::Path(path.clone())));
    assert_eq!(recv(&peer_rx, "the accept"), Addr::Unix(UnixAddr::Unnamed));
    assert!(path.exists());
    assert!(ln.close());
    assert!(!path.exists(), "the socket file outlived the listener");
    finish_io(s);
}

/// An abstract name: no file, the address keeps the name, and a Python-
/// style `to_bytes` gives the leading NUL back.
#[test]
fn echo_over_an_abstract_name() {
    let _fds = fds_shared();
    let name = abstract_name("echo");
    let s = new_sched(1);
    let ln = Arc::new(Listener::bind_unix(&name, 128).unwrap());
    let want = UnixAddr::new(&name);
    assert!(matches!(&want, UnixAddr::Abstract(n) if n.starts_with(b"gmprt-test-")));
    assert_eq!(want.to_bytes(), name.as_os_str().as_encoded_bytes());
    assert_eq!(ln.local_addr(), &Addr::Unix(want.clone()));
    assert!(ln.local_addr().to_string().starts_with("@gmprt-test-"));
    let (peer_tx, _peer_rx) = mpsc::channel();
    echo_server(&s, ln.clone(), peer_tx);
    let (got, _, peer) = dial_and_echo(&s, &name, b"abstract".to_vec());
    assert_eq!(got, b"abstract");
    assert_eq!(peer, Addr::Unix(want));
    ln.close();
    finish_io(s);
}

/// The empty path binds a name the kernel picks (Linux autobind).
#[test]
fn the_empty_path_autobinds_an_abstract_name() {
    let _fds = fds_shared();
    let ln = Listener::bind_unix("", 16).unwrap();
    let Addr::Unix(UnixAddr::Abstract(name)) = ln.local_addr() else {
        panic!("autobind gave {:?}", ln.local_addr());
    };
    assert!(!name.is_empty());
    let mut b = vec![0u8];
    b.extend_from_slice(name);
    StdUnixStream::connect_addr(
        &<std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name)
            .unwrap(),
    )
    .expect("connect to the autobound name");
}

/// A file put in the socket file's place is left alone by the close; so
/// is an adopted listener's file. Dropping a listener removes its own.
#[test]
fn the_close_removes_only_the_file_it_bound() {
    let _fds = fds_shared();
    let dir = TempDir::new();

    let replaced = dir.path("replaced.sock");
    let ln = Listener::bind_unix(&replaced, 16).unwrap();
    std::fs::remove_file(&replaced).unwrap();
    std::fs::write(&replaced, b"not a socket").unwrap();
    let ino = std::fs::metadata(&replaced).unwrap().ino();
    ln.close();
    assert_eq!(std::fs::read(&replaced).unwrap(), b"not a socket");
    assert_eq!(std::fs::metadata(&replaced).unwrap().ino(), ino);

    let dropped = dir.path("dropped.sock");
    drop(Listener::bind_unix(&dropped, 16).unwrap());
    assert!(!dropped.exists(), "the drop left the socket file");

    let adopted = dir.path("adopted.sock");
    let std_ln = StdUnixListener::bind(&adopted).unwrap();
    let ln = Listener::from_fd(OwnedFd::from(std_ln)).unwrap();
    assert_eq!(
        ln.local_addr(),
        &Addr::Unix(UnixAddr::Path(adopted.clone()))
    );
    ln.close();
    assert!(adopted.exists(), "removed an adopted listener's file");
}

// ===== errors =====

#[test]
fn bind_and_dial_errors() {
    let _fds = fds_shared();
    let dir = TempDir::new();
    let s = new_sched(1);

    // Anything at the path, a live socket's file included: EADDRINUSE.
    let taken = dir.path("taken.sock");
    let ln = Listener::bind_unix(&taken, 16).unwrap();
    let e = Listener::bind_unix(&taken, 16).err().expect("bound twice");
    assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE), "{e}");
    ln.close();

    // Paths no sockaddr_un holds.
    let long = dir.path(&"x".repeat(200));
    let e = Listener::bind_unix(&long, 16)
        .err()
        .expect("a 200-byte path");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    let e = Dial::unix(net::unix_path(b"a\0b"), None)
        .err()
        .expect("a NUL inside");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");

    // Bound, not listening: refused. No file: not found.
    let stale = dir.path("stale.sock");
    let bound = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    bound.bind(&SockAddr::unix(&stale).unwrap()).unwrap();
    let missing = dir.path("missing.sock");
    let (tx, rx) = mpsc::channel();
    for p in [stale.clone(), missing, abstract_name("nobody")] {
        let tx = tx.clone();
        let mut dial = Dial::unix(&p, in_ms(DEADLINE.as_millis() as u64)).unwrap();
        go(&s, move |cx| {
            let r = await_io!(cx, dial.poll(cx.sched()), dial);
            let _ = tx.send(r.map(|_| ()).unwrap_err());
            Step::Done
        });
        let e = recv(&rx, "the dial");
        let want = if p.exists() || p.as_os_str().as_encoded_bytes()[0] == 0 {
            libc::ECONNREFUSED
        } else {
            libc::ENOENT
        };
        assert_eq!(e.raw_os_error(), Some(want), "{}: {e}", p.display());
    }
    drop(bound);
    finish_io(s);
}

// ===== a full backlog =====

/// Fills `path`'s backlog with nonblocking connects until one would block;
/// returns the sockets that connected.
fn fill_backlog(path: &Path) -> Vec<Socket> {
    let sa = SockAddr::unix(path).unwrap();
    let mut queued = Vec::new();
    loop {
        let c = Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None).unwrap();
        match c.connect(&sa) {
            Ok(()) => queued.push(c),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return queued,
            Err(e) => panic!("filling the backlog: {e}"),
        }
        assert!(queued.len() < 4096, "the backlog never filled");
    }
}

/// A dial to a listener whose backlog is full waits (it does not fail)
/// and connects once an accept makes room; with a deadline, it times out.
#[test]
fn a_dial_waits_out_a_full_backlog() {
    let _fds = fds_shared();
    let dir = TempDir::new();
    let path = dir.path("full.sock");
    let s = new_sched(2);
    let ln = Arc::new(Listener::bind_unix(&path, 0).unwrap());
    let queued = fill_backlog(&path);
    assert!(!queued.is_empty());

    // With a short deadline: a timeout, not EAGAIN.
    let (tx, rx) = mpsc::channel();
    {
        let tx = tx.clone();
        let mut dial = Dial::unix(&path, in_ms(30)).unwrap();
        go(&s, move |cx| {
            let r = await_io!(cx, dial.poll(cx.sched()), dial);
            let _ = tx.send(r.map(|c| c.peer_addr().unwrap()));
            Step::Done
        });
    }
    let e = recv(&rx, "the timed dial").expect_err("connected past a full backlog");
    assert!(net::is_timeout(&e), "{e}");

    let connected = Arc::new(AtomicUsize::new(0));
    {
        let connected = connected.clone();
        let mut dial = Dial::unix(&path, in_ms(DEADLINE.as_millis() as u64)).unwrap();
        go(&s, move |cx| {
            let r = await_io!(cx, dial.poll(cx.sched()), dial);
            // Pairs with the test thread's load below (SeqCst: plain and
            // obviously enough for a test).
            connected.fetch_add(1, SeqCst);
            let _ = tx.send(r.map(|c| c.peer_addr().unwrap()));
            Step::Done
        });
    }
    // It keeps waiting while nothing is accepted.
    thread::sleep(Duration::from_millis(50));
    assert_eq!(connected.load(SeqCst), 0, "connected past a full backlog");
    let (acc_tx, acc_rx) = mpsc::channel();
    {
        let (ln, mut wait) = (ln.clone(), IoWait::default());
        go(&s, move |cx| {
            let r = await_io!(cx, ln.poll_accept(cx.sched(), &mut wait), wait);
            let _ = acc_tx.send(r.map(|_| ()));
            Step::Done
        });
    }
    recv(&acc_rx, "the accept").expect("accept");
    let peer = recv(&rx, "the dial").expect("the dial after an accept");
    assert_eq!(peer, Addr::Unix(UnixAddr::Path(path.clone())));
    drop(queued);
    ln.close();
    finish_io(s);
}

// ===== accept backoff =====

fn nofile() -> libc::rlimit {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    rl
}

fn set_nofile(rl: &libc::rlimit) {
    // SAFETY: setrlimit reads one rlimit struct we own.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, rl) }, 0);
}

/// Out of descriptors, a Unix accept backs off as a TCP one does (the
/// connections wait in the backlog) and serves them once fds free up.
#[test]
fn unix_accept_backs_off_out_of_fds() {
    let _fds = fds_exclusive();
    let dir = TempDir::new();
    let path = dir.path("nofile.sock");
    let s = new_sched(2);
    let ln = Arc::new(Listener::bind_unix(&path, 64).unwrap());
    let conns = Arc::new(Mutex::new(Vec::<Conn>::new()));
    {
        let (ln, conns) = (ln.clone(), conns.clone());
        let mut wait = IoWait::default();
        go(&s, move |cx| loop {
            match await_io!(cx, ln.poll_accept(cx.sched(), &mut wait), wait) {
                Ok((conn, _)) => conns.lock().unwrap().push(conn),
                Err(e) if net::is_closed(&e) => return Step::Done,
                Err(e) => panic!("accept: {e}"),
            }
        });
    }
    let accepted = || conns.lock().unwrap().len();
    let first = StdUnixStream::connect(&path).unwrap();
    wait_until(&s, "the first accept", || accepted() == 1);
    // Made while descriptors remain; connected once they have run out (a
    // connect needs no new fd).
    let waiting: Vec<Socket> = (0..3)
        .map(|_| Socket::new(Domain::UNIX, Type::STREAM, None).unwrap())
        .collect();
    let before = nofile();
    set_nofile(&libc::rlimit {
        rlim_cur: 256.min(before.rlim_max),
        rlim_max: before.rlim_max,
    });
    let mut hog = Vec::new();
    loop {
        // SAFETY: dup of an fd we own; the result, if any, is ours.
        let fd = unsafe { libc::dup(first.as_raw_fd()) };
        if fd < 0 {
            break;
        }
        // SAFETY: a new fd nobody else owns.
        hog.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let sa = SockAddr::unix(&path).unwrap();
    for c in &waiting {
        c.connect(&sa).unwrap();
    }
    wait_until(&s, "accept to back off", || ln.is_backing_off());
    assert_eq!(accepted(), 1, "accepted without a descriptor");
    drop(hog);
    set_nofile(&before);
    wait_until(&s, "the waiting clients to be accepted", || accepted() == 4);
    ln.close();
    finish_io(s);
}

// ===== adopting sockets =====

/// `Conn::from_fd` on both ends of a socketpair and on a TCP connection;
/// `Listener::from_fd` on a TCP and a Unix listener made by std. Each
/// then works on the netpoller, and a dup the caller kept stays open after
/// the close.
#[test]
fn adopted_sockets_work_and_a_kept_dup_outlives_them() {
    let _fds = fds_shared();
    let s = new_sched(1);

    // A Unix socketpair, one end adopted through a dup.
    let (a, mut b) = StdUnixStream::pair().unwrap();
    let dup = a.try_clone().unwrap();
    let conn = Arc::new(Conn::from_fd(OwnedFd::from(dup)).unwrap());
    assert!(conn.is_unix());
    assert_eq!(conn.peer_addr().unwrap(), Addr::Unix(UnixAddr::Unnamed));
    b.write_all(b"ping").unwrap();
    let (tx, rx) = mpsc::channel();
    {
        let (conn, mut wait, mut buf, mut sent) = (conn.clone(), IoWait::default(), [0u8; 16], 0);
        go(&s, move |cx| {
            let n = await_io!(cx, conn.poll_recv(cx.sched(), &mut buf, &mut wait), wait).unwrap();
            await_io!(
                cx,
                conn.poll_send_all(cx.sched(), b"pong", &mut sent, &mut wait),
                wait
            )
            .unwrap();
            let _ = tx.send(buf[..n].to_vec());
            Step::Done
        });
    }
    assert_eq!(recv(&rx, "the adopted recv"), b"ping");
    let mut got = [0u8; 4];
    b.set_read_timeout(Some(DEADLINE)).unwrap();
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
    conn.close();
    // The caller's own fd still works (it shares O_NONBLOCK with the dup).
    b.write_all(b"still").unwrap();
    a.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut got = [0u8; 5];
    (&a).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still");

    // A TCP listener and a connection to it, both from std.
    let std_ln = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_ln.local_addr().unwrap();
    let ln = Listener::from_fd(OwnedFd::from(std_ln)).unwrap();
    assert!(!ln.is_unix());
    assert_eq!(ln.tcp_addr(), Some(addr));
    let client = std::net::TcpStream::connect(addr).unwrap();
    let cconn = Conn::from_fd(OwnedFd::from(client)).unwrap();
    assert!(!cconn.is_unix());
    assert_eq!(cconn.peer_addr().unwrap(), Addr::Inet(addr));
    let (tx, rx) = mpsc::channel();
    let ln = Arc::new(ln);
    {
        let (ln, mut wait) = (ln.clone(), IoWait::default());
        go(&s, move |cx| {
            let r = await_io!(cx, ln.poll_accept(cx.sched(), &mut wait), wait);
            let _ = tx.send(r.map(|(c, peer)| (c.local_addr().unwrap(), peer)));
            Step::Done
        });
    }
    let (local, peer) = recv(&rx, "the adopted accept").unwrap();
    assert_eq!(local, Addr::Inet(addr));
    assert_eq!(peer, cconn.local_addr().unwrap());
    ln.close();
    cconn.close();
    finish_io(s);
}

/// Each wrong kind is an InvalidInput error that names what it got.
#[test]
fn adopting_the_wrong_kind_is_refused() {
    let _fds = fds_shared();
    let refused = |r: io::Result<()>, has: &str| {
        let e = r.expect_err(has);
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains(has), "{e:?} does not say {has:?}");
    };
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    refused(Conn::from_fd(OwnedFd::from(udp)).map(|_| ()), "SOCK_DGRAM");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    refused(
        Listener::from_fd(OwnedFd::from(udp)).map(|_| ()),
        "SOCK_DGRAM",
    );

    let fresh = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    refused(
        Conn::from_fd(OwnedFd::from(fresh)).map(|_| ()),
        "not connected",
    );
    let fresh = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    refused(
        Listener::from_fd(OwnedFd::from(fresh)).map(|_| ()),
        "not listening",
    );

    let ln = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    refused(Conn::from_fd(OwnedFd::from(ln)).map(|_| ()), "listening");
    let (a, _b) = StdUnixStream::pair().unwrap();
    refused(
        Listener::from_fd(OwnedFd::from(a)).map(|_| ()),
        "not listening",
    );

    let seq = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
    refused(
        Conn::from_fd(OwnedFd::from(seq)).map(|_| ()),
        "SOCK_SEQPACKET",
    );

    let mut fds = [0; 2];
    // SAFETY: pipe writes two fds into the array we own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both fds are new and ours.
    let (r, _w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    refused(Conn::from_fd(r).map(|_| ()), "not a socket");
}
