//! gmprt-core's `net` driving Rust-native Gs on a real `Sched`: TCP over
//! loopback (accept, dial, recv, send, close, deadlines, accept backoff)
//! and waits on foreign fds. Gs report through channels, and every wait on
//! them is bounded, so a lost wake fails a test instead of hanging it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use gmprt_core::net::{self, Conn, Dial, FdWait, IoWait, Listener};
use gmprt_core::netpoll::Dir;
use gmprt_core::{Sched, Step};

#[macro_use]
mod common;
use common::{fds_exclusive, fds_shared, finish_io, go, new_sched, recv, wait_until, DEADLINE};

fn loopback() -> Arc<Listener> {
    let ln = Listener::bind("127.0.0.1:0".parse().unwrap(), 1024, false).expect("listen");
    Arc::new(ln)
}

fn in_ms(ms: u64) -> Option<Instant> {
    Some(Instant::now() + Duration::from_millis(ms))
}

/// Client `id`'s message: a pattern that differs per client and offset, so
/// a byte delivered twice, dropped or crossed between connections shows.
fn message(id: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + id * 131) % 251) as u8).collect()
}

// ===== echo =====

#[derive(Default)]
struct Tally {
    /// Bytes the clients' writers handed to the kernel.
    sent: AtomicUsize,
    /// Bytes the server's echo Gs received (and then sent back).
    echoed: AtomicUsize,
    /// Bytes the clients' readers received and checked.
    received: AtomicUsize,
}

/// Echoes what it receives until EOF, then closes.
fn echo_g(s: &Arc<Sched>, conn: Conn, tally: Arc<Tally>, errs: Sender<String>) {
    let mut buf = vec![0u8; 16 * 1024];
    let (mut have, mut sent) = (0, 0);
    let (mut rwait, mut wwait) = (IoWait::default(), IoWait::default());
    go(s, move |cx| loop {
        if have > 0 {
            let r = await_io!(
                cx,
                conn.poll_send_all(cx.sched(), &buf[..have], &mut sent, &mut wwait),
                wwait
            );
            if let Err(e) = r {
                let _ = errs.send(format!("echo send: {e}"));
                return Step::Done;
            }
            tally.echoed.fetch_add(have, Relaxed);
            (have, sent) = (0, 0);
        }
        match await_io!(cx, conn.poll_recv(cx.sched(), &mut buf, &mut rwait), rwait) {
            Ok(0) => {
                conn.close();
                return Step::Done;
            }
            Ok(n) => have = n,
            Err(e) => {
                let _ = errs.send(format!("echo recv: {e}"));
                return Step::Done;
            }
        }
    });
}

/// An echo server and `clients` clients, each a dialing G that starts a
/// writer G and a reader G on its connection (one G sends while another
/// receives on the same `Conn`). Messages outgrow the socket buffers, so
/// both sides park on full and empty sockets. Every byte is accounted for
/// exactly once, in order, on the connection it was sent on.
#[test]
fn echo_server_and_clients_account_for_every_byte() {
    let _fds = fds_shared();
    const CLIENTS: usize = 32;
    const LEN: usize = 256 * 1024;
    let s = new_sched(2);
    let ln = loopback();
    let addr = ln.tcp_addr().unwrap();
    let tally = Arc::new(Tally::default());
    let (errs, errs_rx) = mpsc::channel::<String>();
    let (done, done_rx) = mpsc::channel::<usize>();

    // The server: accepts exactly CLIENTS connections.
    {
        let (ln, tally, errs, sched) = (ln.clone(), tally.clone(), errs.clone(), s.clone());
        let (mut wait, mut left) = (IoWait::default(), CLIENTS);
        go(&s, move |cx| {
            while left > 0 {
                match await_io!(cx, ln.poll_accept(cx.sched(), &mut wait), wait) {
                    Ok((conn, peer)) => {
                        assert!(peer.inet().unwrap().ip().is_loopback());
                        echo_g(&sched, conn, tally.clone(), errs.clone());
                        left -= 1;
                    }
                    Err(e) => {
                        let _ = errs.send(format!("accept: {e}"));
                        return Step::Done;
                    }
                }
            }
            Step::Done
        });
    }

    for id in 0..CLIENTS {
        let (tally, errs, done, sched) = (tally.clone(), errs.clone(), done.clone(), s.clone());
        let mut dial = Dial::new(vec![addr], in_ms(DEADLINE.as_millis() as u64));
        go(&s, move |cx| {
            let conn = match await_io!(cx, dial.poll(cx.sched()), dial) {
                Ok(c) => Arc::new(c),
                Err(e) => {
                    let _ = errs.send(format!("dial: {e}"));
                    return Step::Done;
                }
            };
            let msg = Arc::new(message(id, LEN));
            // Writer: all of the message, then a half-close.
            {
                let (conn, msg, tally, errs) =
                    (conn.clone(), msg.clone(), tally.clone(), errs.clone());
                let (mut wait, mut sent) = (IoWait::default(), 0);
                go(&sched, move |cx| {
                    let r = await_io!(
                        cx,
                        conn.poll_send_all(cx.sched(), &msg, &mut sent, &mut wait),
                        wait
                    );
                    match r.and_then(|()| conn.close_write()) {
                        Ok(()) => tally.sent.fetch_add(sent, Relaxed),
                        Err(e) => {
                            let _ = errs.send(format!("client {id} send: {e}"));
                            return Step::Done;
                        }
                    };
                    Step::Done
                });
            }
            // Reader: the echo, checked byte for byte, until EOF.
            let (tally, errs, done) = (tally.clone(), errs.clone(), done.clone());
            let (mut wait, mut buf, mut got) = (IoWait::default(), Vec::new(), 0);
            go(&sched, move |cx| loop {
                let r = await_io!(
                    cx,
                    conn.poll_recv_vec(cx.sched(), &mut buf, 8 * 1024, &mut wait),
                    wait
                );
                match r {
                    Ok(0) => {
                        if got == LEN {
                            let _ = done.send(id);
                        } else {
                            let _ = errs.send(format!("client {id}: EOF after {got} of {LEN}"));
                        }
                        conn.close();
                        return Step::Done;
                    }
                    Ok(n) => {
                        assert_eq!(n, buf.len());
                        if got + n > LEN || buf[..] != msg[got..got + n] {
                            let _ = errs.send(format!("client {id}: wrong bytes at {got}"));
                            return Step::Done;
                        }
                        got += n;
                        tally.received.fetch_add(n, Relaxed);
                    }
                    Err(e) => {
                        let _ = errs.send(format!("client {id} recv: {e}"));
                        return Step::Done;
                    }
                }
            });
            Step::Done
        });
    }
    drop((errs, done));

    let mut seen = [0u32; CLIENTS];
    for _ in 0..CLIENTS {
        if let Ok(e) = errs_rx.try_recv() {
            panic!("{e}");
        }
        seen[recv(&done_rx, "client to finish")] += 1;
    }
    assert!(
        seen.iter().all(|&n| n == 1),
        "clients finished {seen:?} times"
    );
    finish_io(s);
    let errors: Vec<String> = errs_rx.try_iter().collect();
    assert!(errors.is_empty(), "{errors:?}");
    let total = CLIENTS * LEN;
    assert_eq!(tally.sent.load(Relaxed), total, "sent");
    assert_eq!(tally.echoed.load(Relaxed), total, "echoed");
    assert_eq!(tally.received.load(Relaxed), total, "received");
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

/// Out of descriptors, accept backs off instead of failing; once some are
/// free again the listener accepts the connections that waited in the
/// backlog, and goes on serving.
#[test]
fn accept_backs_off_out_of_fds_and_the_listener_survives() {
    let _fds = fds_exclusive();
    let s = new_sched(2);
    let ln = loopback();
    let addr = ln.tcp_addr().unwrap();
    let conns = Arc::new(Mutex::new(Vec::<Conn>::new()));
    let (errs, errs_rx) = mpsc::channel::<String>();
    {
        let (ln, conns) = (ln.clone(), conns.clone());
        let mut wait = IoWait::default();
        go(&s, move |cx| loop {
            match await_io!(cx, ln.poll_accept(cx.sched(), &mut wait), wait) {
                Ok((conn, _)) => conns.lock().unwrap().push(conn),
                Err(e) if net::is_closed(&e) => return Step::Done,
                Err(e) => {
                    let _ = errs.send(format!("accept: {e}"));
                    return Step::Done;
                }
            }
        });
    }
    // The accepted count; fails at once if the accepting G gave up.
    let accepted = || {
        if let Ok(e) = errs_rx.try_recv() {
            panic!("{e}");
        }
        conns.lock().unwrap().len()
    };
    // One connection first: the netpoller and the listener's registration
    // exist before the descriptors run out.
    let first = TcpStream::connect(addr).unwrap();
    wait_until(&s, "the first accept", || accepted() == 1);

    // Sockets for the clients, made while descriptors remain.
    let waiting: Vec<socket2::Socket> = (0..3)
        .map(|_| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap())
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
            let e = io::Error::last_os_error();
            assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
            break;
        }
        // SAFETY: a new fd nobody else owns.
        hog.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    for c in &waiting {
        c.connect(&addr.into()).unwrap();
    }
    wait_until(&s, "accept to back off", || {
        accepted() == 1 && ln.is_backing_off()
    });
    thread::sleep(Duration::from_millis(50));
    assert_eq!(accepted(), 1, "accepted without a descriptor");
    drop(hog);
    set_nofile(&before);

    wait_until(&s, "the waiting clients to be accepted", || accepted() == 4);
    // And it serves on.
    let _later = TcpStream::connect(addr).unwrap();
    wait_until(&s, "a later accept", || accepted() == 5);
    assert!(!ln.is_backing_off());
    ln.close();
    finish_io(s);
    let errors: Vec<String> = errs_rx.try_iter().collect();
    assert!(errors.is_empty(), "{errors:?}");
}

/// Moved here with the function from `netpoll`.
#[test]
fn nofile_limit_is_raised_to_the_hard_limit() {
    let _fds = fds_exclusive();
    let soft = net::raise_nofile_limit().unwrap();
    assert_eq!(nofile().rlim_cur, soft);
}

// ===== dial =====

/// Dialing a port nobody listens on fails with ConnectionRefused, at once.
#[test]
fn dial_to_a_closed_port_is_refused() {
    let _fds = fds_shared();
    let s = new_sched(1);
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (tx, rx) = mpsc::channel();
    let mut dial = Dial::new(vec![addr], in_ms(DEADLINE.as_millis() as u64));
    go(&s, move |cx| {
        let r = await_io!(cx, dial.poll(cx.sched()), dial);
        let _ = tx.send(r.map(|_| ()));
        Step::Done
    });
    let e = recv(&rx, "the dial").expect_err("dialed a closed port");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    finish_io(s);
}

/// A dial over several addresses goes on past the refused ones.
#[test]
fn dial_tries_the_next_address() {
    let _fds = fds_shared();
    let s = new_sched(1);
    let closed: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let ln = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (tx, rx) = mpsc::channel();
    let mut dial = Dial::new(vec![closed, ln.local_addr().unwrap()], None);
    go(&s, move |cx| {
        let r = await_io!(cx, dial.poll(cx.sched()), dial);
        let _ = tx.send(r.and_then(|c| c.peer_addr()).map(|a| a.inet().unwrap()));
        Step::Done
    });
    let peer = recv(&rx, "the dial").expect("dial");
    assert_eq!(peer, ln.local_addr().unwrap());
    let _accepted = ln.accept().unwrap();
    finish_io(s);
}

// ===== deadlines =====

/// A recv whose deadline passes returns TimedOut (not before the deadline),
/// and the connection then receives and sends as usual.
#[test]
fn recv_deadline_times_out_and_the_conn_stays_usable() {
    let _fds = fds_shared();
    let s = new_sched(2);
    let ln = loopback();
    let mut peer = TcpStream::connect(ln.tcp_addr().unwrap()).unwrap();
    peer.set_read_timeout(Some(DEADLINE)).unwrap();
    let (tx, rx) = mpsc::channel::<Result<String, String>>();
    let (mut phase, mut conn, mut t0) = (0, None::<Conn>, Instant::now());
    let (mut wait, mut buf, mut sent) = (IoWait::default(), [0u8; 64], 0);
    go(&s, move |cx| loop {
        match phase {
            0 => match await_io!(cx, ln.poll_accept(cx.sched(), &mut wait), wait) {
                Ok((c, _)) => {
                    conn = Some(c);
                    t0 = Instant::now();
                    wait.set_deadline(Some(t0 + Duration::from_millis(50)));
                    phase = 1;
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("accept: {e}")));
                    return Step::Done;
                }
            },
            1 => {
                let c = conn.as_ref().unwrap();
                let r = await_io!(cx, c.poll_recv(cx.sched(), &mut buf, &mut wait), wait);
                let took = t0.elapsed();
                match r {
                    Err(e) if net::is_timeout(&e) && e.kind() == io::ErrorKind::TimedOut => {
                        let _ = tx.send(Ok(format!("{took:?}")));
                        if took < Duration::from_millis(50) {
                            let _ = tx.send(Err(format!("timed out early, after {took:?}")));
                        }
                        wait.set_deadline(Some(Instant::now() + DEADLINE));
                        phase = 2;
                    }
                    other => {
                        let _ = tx.send(Err(format!("recv with a deadline: {other:?}")));
                        return Step::Done;
                    }
                }
            }
            2 => {
                let c = conn.as_ref().unwrap();
                let r = await_io!(cx, c.poll_recv(cx.sched(), &mut buf, &mut wait), wait);
                match r {
                    Ok(n) => {
                        let _ = tx.send(Ok(String::from_utf8_lossy(&buf[..n]).into_owned()));
                        phase = 3;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("recv after the timeout: {e}")));
                        return Step::Done;
                    }
                }
            }
            _ => {
                let c = conn.as_ref().unwrap();
                let r = await_io!(
                    cx,
                    c.poll_send_all(cx.sched(), b"world", &mut sent, &mut wait),
                    wait
                );
                let _ = tx.send(r.map(|()| "sent".into()).map_err(|e| e.to_string()));
                return Step::Done;
            }
        }
    });
    let took = recv(&rx, "the timeout").expect("a timeout");
    eprintln!("recv timed out after {took}");
    peer.write_all(b"hello").unwrap();
    assert_eq!(recv(&rx, "the recv").expect("recv"), "hello");
    assert_eq!(recv(&rx, "the send").expect("send"), "sent");
    let mut got = [0u8; 5];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"world");
    finish_io(s);
}

/// An accept whose deadline passes returns TimedOut; the listener serves
/// the next accept.
#[test]
fn accept_deadline_times_out() {
    let _fds = fds_shared();
    let s = new_sched(1);
    let ln = loopback();
    let addr = ln.tcp_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let mut wait = IoWait::new(in_ms(30));
    let mut timed_out = false;
    go(&s, move |cx| loop {
        let r = await_io!(cx, ln.poll_accept(cx.sched(), &mut wait), wait);
        if !timed_out {
            timed_out = true;
            let _ = tx.send(r.map(|_| ()));
            wait.set_deadline(Some(Instant::now() + DEADLINE));
            continue;
        }
        let _ = tx.send(r.map(|_| ()));
        return Step::Done;
    });
    let e = recv(&rx, "the accept timeout").expect_err("accepted nothing");
    assert!(net::is_timeout(&e), "{e}");
    let _c = TcpStream::connect(addr).unwrap();
    recv(&rx, "the accept").expect("accept");
    finish_io(s);
}

// ===== close =====

/// Closing a connection (here from another G) wakes the G parked in recv
/// on it, with a Closed error; so does closing a listener under a parked
/// accept. Later operations fail the same way.
#[test]
fn close_wakes_the_parked_gs() {
    let _fds = fds_shared();
    let s = new_sched(2);
    let ln = loopback();
    let _peer = TcpStream::connect(ln.tcp_addr().unwrap()).unwrap();
    let conn = {
        let (tx, rx) = mpsc::channel();
        let (ln, mut wait) = (ln.clone(), IoWait::default());
        go(&s, move |cx| {
            let r = await_io!(cx, ln.poll_accept(cx.sched(), &mut wait), wait);
            let _ = tx.send(r.map(|(c, _)| c));
            Step::Done
        });
        Arc::new(recv(&rx, "the accept").expect("accept"))
    };
    let (tx, rx) = mpsc::channel::<(&str, io::Result<()>)>();
    {
        let (conn, tx, mut wait, mut buf) =
            (conn.clone(), tx.clone(), IoWait::default(), [0u8; 16]);
        go(&s, move |cx| {
            let r = await_io!(cx, conn.poll_recv(cx.sched(), &mut buf, &mut wait), wait);
            let _ = tx.send(("recv", r.map(|_| ())));
            Step::Done
        });
    }
    {
        let (ln, tx, mut wait) = (ln.clone(), tx.clone(), IoWait::default());
        go(&s, move |cx| {
            let r = await_io!(cx, ln.poll_accept(cx.sched(), &mut wait), wait);
            let _ = tx.send(("accept", r.map(|_| ())));
            Step::Done
        });
    }
    wait_until(&s, "both Gs to park", || s.netpoll().waiters() == 2);
    {
        let (conn, ln) = (conn.clone(), ln.clone());
        go(&s, move |_| {
            conn.close();
            ln.close();
            Step::Done
        });
    }
    let mut woke: Vec<&str> = Vec::new();
    for _ in 0..2 {
        let (what, r) = recv(&rx, "a parked G to wake");
        let e = r.expect_err(what);
        assert!(net::is_closed(&e), "{what}: {e}");
        woke.push(what);
    }
    woke.sort();
    assert_eq!(woke, ["accept", "recv"]);
    assert!(conn.is_closed() && ln.is_closed());
    assert_eq!(conn.fd(), None);
    assert!(!conn.close(), "closed twice");
    assert!(net::is_closed(&conn.peer_addr().unwrap_err()));
    assert!(net::is_closed(&conn.close_write().unwrap_err()));
    finish_io(s);
}

// ===== fd waits =====

/// A wait on a foreign fd parks until the fd is readable, and times out on
/// one that never becomes so; the fd stays the caller's.
#[test]
fn fd_waits_park_until_ready_or_the_deadline() {
    let _fds = fds_shared();
    let s = new_sched(1);
    let (mut a, b) = UnixStream::pair().unwrap();
    let (tx, rx) = mpsc::channel();
    let (mut readable, mut never) = (
        FdWait::new(b.as_raw_fd(), Dir::Read, None),
        FdWait::new(b.as_raw_fd(), Dir::Read, in_ms(30)),
    );
    go(&s, move |cx| {
        let r = await_io!(cx, never.poll(cx.sched()), never);
        let _ = tx.send(("never", r));
        Step::Done
    });
    let (what, r) = recv(&rx, "the fd wait timeout");
    assert_eq!(what, "never");
    assert!(net::is_timeout(&r.unwrap_err()));

    let (tx, rx) = mpsc::channel();
    go(&s, move |cx| {
        let r = await_io!(cx, readable.poll(cx.sched()), readable);
        let _ = tx.send(r);
        Step::Done
    });
    wait_until(&s, "the fd wait to park", || s.netpoll().waiters() == 1);
    assert!(rx.try_recv().is_err(), "woke before the fd was readable");
    a.write_all(b"x").unwrap();
    recv(&rx, "the fd wait").expect("readable");
    // Nothing was read: the byte is still there.
    let mut got = [0u8; 1];
    (&b).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"x");
    finish_io(s);
}
