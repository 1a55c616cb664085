//! gmprt-core's `net::PacketConn` driving Rust-native Gs on a real `Sched`:
//! UDP over loopback (echo with retries, connected sockets, ICMP refusal,
//! deadlines, truncation, close). Gs report through channels, and every
//! wait on them is bounded, so a lost wake fails a test instead of hanging
//! it. Loopback UDP may still drop a datagram under load: round trips
//! resend after a short deadline instead of expecting each to arrive.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{self};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gmprt_core::net::{self, IoWait, PacketConn, DATAGRAM_MAX};
use gmprt_core::{Sched, Step};

#[macro_use]
mod common;
use common::{finish_io, go, new_sched, recv, wait_until};

fn loopback() -> Arc<PacketConn> {
    Arc::new(PacketConn::bind("127.0.0.1:0".parse().unwrap(), false).expect("bind"))
}

fn in_ms(ms: u64) -> Option<Instant> {
    Some(Instant::now() + Duration::from_millis(ms))
}

/// Echoes each datagram to its sender until the socket is closed.
fn echo_g(s: &Arc<Sched>, pc: Arc<PacketConn>) {
    let mut buf = Vec::new();
    let mut rwait = IoWait::default();
    let mut wwait = IoWait::default();
    let mut reply: Option<SocketAddr> = None;
    go(s, move |cx| loop {
        if let Some(to) = reply {
            match await_io!(cx, pc.poll_send_to(cx.sched(), &buf, to, &mut wwait), wwait) {
                Ok(n) => assert_eq!(n, buf.len(), "a datagram goes whole"),
                Err(e) if net::is_closed(&e) => return Step::Done,
                Err(e) => panic!("echo send_to: {e}"),
            }
            reply = None;
        }
        match await_io!(
            cx,
            pc.poll_recv_from(cx.sched(), &mut buf, DATAGRAM_MAX, &mut rwait),
            rwait
        ) {
            Ok((_, from)) => reply = Some(from),
            Err(e) if net::is_closed(&e) => return Step::Done,
            Err(e) => panic!("echo recv_from: {e}"),
        }
    });
}

/// Client `id`'s request `seq`: distinct per client and round, of a length
/// that varies (0 included: an empty datagram is a datagram).
fn request(id: usize, seq: usize) -> Vec<u8> {
    let len = (id * 37 + seq * 101) % 1500;
    let mut v: Vec<u8> = (0..len).map(|i| ((i + id * 7 + seq) % 251) as u8).collect();
    if len >= 4 {
        v[..2].copy_from_slice(&(id as u16).to_be_bytes());
        v[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    }
    v
}

/// An echo G on a bound socket and `CLIENTS` client Gs on connected ones,
/// each doing `ROUNDS` request/reply round trips: a reply must be its own
/// request's, byte for byte; a lost datagram is resent after 200 ms.
#[test]
fn echo_round_trips_with_connected_clients() {
    const CLIENTS: usize = 8;
    const ROUNDS: usize = 50;
    let s = new_sched(2);
    let server = loopback();
    let addr = server.local_addr().unwrap();
    echo_g(&s, server.clone());
    let (done, done_rx) = mpsc::channel::<io::Result<usize>>();
    for id in 0..CLIENTS {
        let pc = PacketConn::connect(&[addr]).expect("connect");
        assert!(pc.is_connected());
        assert_eq!(pc.peer_addr().unwrap(), addr);
        let done = done.clone();
        let (mut seq, mut sending, mut resent) = (0, true, 0);
        let (mut rwait, mut wwait, mut buf) = (IoWait::default(), IoWait::default(), Vec::new());
        go(&s, move |cx| loop {
            if seq == ROUNDS {
                pc.close();
                let _ = done.send(Ok(resent));
                return Step::Done;
            }
            let req = request(id, seq);
            if sending {
                if let Err(e) = await_io!(cx, pc.poll_send(cx.sched(), &req, &mut wwait), wwait) {
                    let _ = done.send(Err(e));
                    return Step::Done;
                }
                sending = false;
                rwait.set_deadline(in_ms(200));
            }
            match await_io!(
                cx,
                pc.poll_recv(cx.sched(), &mut buf, DATAGRAM_MAX, &mut rwait),
                rwait
            ) {
                // A late reply to an earlier, resent request: skip it.
                Ok(_) if buf != req => {}
                Ok(_) => {
                    seq += 1;
                    sending = true;
                }
                Err(e) if net::is_timeout(&e) => {
                    resent += 1;
                    sending = true;
                }
                Err(e) => {
                    let _ = done.send(Err(e));
                    return Step::Done;
                }
            }
        });
    }
    let mut resent = 0;
    for _ in 0..CLIENTS {
        resent += recv(&done_rx, "a client to finish").expect("client");
    }
    assert!(resent < CLIENTS * ROUNDS, "nearly every datagram was lost");
    server.close();
    finish_io(s);
}

/// Linux: an ICMP port unreachable for a connected socket's datagram makes
/// its next receive fail with ECONNREFUSED (waking the G parked in it).
#[test]
fn connected_socket_to_a_closed_port_is_refused() {
    let s = new_sched(1);
    let addr = {
        let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
        gone.local_addr().unwrap()
    };
    let pc = PacketConn::connect(&[addr]).expect("connect");
    let (tx, rx) = mpsc::channel();
    let (mut wait, mut buf, mut sent) = (IoWait::new(in_ms(10_000)), Vec::new(), false);
    go(&s, move |cx| {
        if !sent {
            sent = true;
            if let Err(e) = await_io!(cx, pc.poll_send(cx.sched(), b"anyone?", &mut wait), wait) {
                let _ = tx.send(Err(e));
                return Step::Done;
            }
        }
        let r = await_io!(cx, pc.poll_recv(cx.sched(), &mut buf, 100, &mut wait), wait);
        let _ = tx.send(r);
        Step::Done
    });
    let e = recv(&rx, "the receive").expect_err("a refusal");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    finish_io(s);
}

/// A receive deadline times out and the socket stays usable; a datagram
/// longer than `max` is truncated; an empty one arrives as 0 bytes;
/// send_to a stranger on a connected socket is EISCONN; close wakes a G
/// parked with no deadline.
#[test]
fn deadlines_truncation_empty_datagrams_and_close() {
    let s = new_sched(2);
    let pc = loopback();
    let addr = pc.local_addr().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tx, rx) = mpsc::channel::<(&str, io::Result<Vec<u8>>)>();
    {
        let (pc, tx) = (pc.clone(), tx.clone());
        let (mut wait, mut buf, mut step) = (IoWait::new(in_ms(50)), Vec::new(), 0);
        go(&s, move |cx| loop {
            let max = if step == 1 { 3 } else { 100 };
            if step == 3 {
                wait.set_deadline(None);
            }
            let r = await_io!(
                cx,
                pc.poll_recv_from(cx.sched(), &mut buf, max, &mut wait),
                wait
            );
            let what = ["timeout", "truncated", "empty", "closed"][step];
            let _ = tx.send((what, r.map(|_| buf.clone())));
            step += 1;
            if step == 4 {
                return Step::Done;
            }
            wait.set_deadline(in_ms(10_000));
        });
    }
    let (what, r) = recv(&rx, "the timeout");
    assert_eq!(what, "timeout");
    assert!(net::is_timeout(&r.unwrap_err()));
    peer.send_to(b"truncate me", addr).unwrap();
    let (what, r) = recv(&rx, "the truncated datagram");
    assert_eq!((what, r.unwrap()), ("truncated", b"tru".to_vec()));
    peer.send_to(b"", addr).unwrap();
    let (what, r) = recv(&rx, "the empty datagram");
    assert_eq!((what, r.unwrap()), ("empty", vec![]));
    wait_until(&s, "the G to park with no deadline", || {
        s.netpoll().waiters() == 1
    });
    pc.close();
    let (what, r) = recv(&rx, "the closed socket");
    assert_eq!(what, "closed");
    assert!(net::is_closed(&r.unwrap_err()));
    assert!(!pc.close(), "closed twice");
    assert_eq!(pc.fd(), None);
    assert!(net::is_closed(&pc.local_addr().unwrap_err()));

    // Not connected: no peer. Connected: no strangers.
    let bound = loopback();
    assert_eq!(
        bound.peer_addr().unwrap_err().raw_os_error(),
        Some(libc::ENOTCONN)
    );
    let conn = Arc::new(PacketConn::connect(&[peer.local_addr().unwrap()]).unwrap());
    let (tx, rx) = mpsc::channel();
    let mut wait = IoWait::default();
    let stranger = bound.local_addr().unwrap();
    go(&s, move |cx| {
        let r = await_io!(
            cx,
            conn.poll_send_to(cx.sched(), b"x", stranger, &mut wait),
            wait
        );
        let _ = tx.send(r);
        Step::Done
    });
    let e = recv(&rx, "the send_to").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EISCONN), "{e}");
    finish_io(s);
}

/// `from_fd` takes UDP sockets only.
#[test]
fn from_fd_takes_udp_sockets_only() {
    use std::os::fd::OwnedFd;
    let tcp: OwnedFd = std::net::TcpListener::bind("127.0.0.1:0").unwrap().into();
    let e = PacketConn::from_fd(tcp)
        .err()
        .expect("a TCP socket is refused");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    let pc = PacketConn::from_fd(udp.into()).expect("a UDP socket");
    assert_eq!(pc.local_addr().unwrap(), addr);
    assert!(!pc.is_connected());
}
