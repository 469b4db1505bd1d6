//! Unit tests of the vsock device over mock guest memory, its host side on real Unix sockets
//! in a temporary directory. The event loop is played by hand: [`Rig::pump`] tells the muxer
//! what it would have heard.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::packet::{op, Header, HDR_LEN, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::*;
use crate::virtio::mmio::MmioInterrupt;
use crate::virtio::test_utils::{memory, TestRing, WRITE};
use crate::virtio::{features, ActiveQueues, VirtioDevice};
use crate::EventFdTrigger;

const CID: u64 = 3;
const RING: u16 = 16;
const RX_BUFS: u64 = 0x1_0000;
const RX_BUF_LEN: u32 = (HDR_LEN as u32) + 4096;
const TX_DATA: u64 = 0x4_0000;
const FIRST_HOST_PORT: u32 = 1 << 30;

struct Rig {
    dev: Vsock,
    mem: GuestMemoryMmap,
    rx: TestRing,
    tx: TestRing,
    ev: TestRing,
    rx_heads: std::collections::HashMap<u32, u64>,
    next_rx_slot: u64,
    dir: tempfile::TempDir,
    _irq: EventFd,
}

impl Rig {
    fn new() -> Self {
        Self::with(|_| {})
    }

    /// A device, `before` done to it before the driver activates it.
    fn with(before: impl FnOnce(&mut Vsock)) -> Self {
        let mem = memory();
        let (rx, tx, ev) = (
            TestRing::new(&mem, 0, RING),
            TestRing::new(&mem, 0x1000, RING),
            TestRing::new(&mem, 0x2000, RING),
        );
        let dir = tempfile::tempdir().unwrap();
        let muxer = Muxer::bind(&dir.path().join("v.sock"), CID).unwrap();
        let mut dev = Vsock::new(CID, muxer).unwrap();
        before(&mut dev);
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut rig = Rig {
            dev,
            mem: mem.clone(),
            rx,
            tx,
            ev,
            rx_heads: Default::default(),
            next_rx_slot: 0,
            dir,
            _irq: irq.try_clone().unwrap(),
        };
        rig.ev.post(&mem, &[(0x3000, 8, WRITE)]);
        rig.dev
            .activate(ActiveQueues {
                mem,
                queues: vec![
                    rig.rx.queue(false),
                    rig.tx.queue(false),
                    rig.ev.queue(false),
                ],
                acked_features: features::VERSION_1,
                interrupt: Arc::new(MmioInterrupt::new(EventFdTrigger::new(irq))),
            })
            .unwrap();
        rig
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn metric(&self, f: impl Fn(&VsockMetrics) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.dev.metrics).load(Ordering::Relaxed)
    }

    /// Posts `n` receive buffers.
    fn post_rx(&mut self, n: usize) {
        for _ in 0..n {
            let addr = RX_BUFS + (self.next_rx_slot % u64::from(RING)) * 0x2000;
            self.next_rx_slot += 1;
            let head = self.rx.post(&self.mem, &[(addr, RX_BUF_LEN, WRITE)]);
            self.rx_heads.insert(u32::from(head), addr);
        }
    }

    /// The guest sends one packet (its header from `hdr`, `len` set from `payload`).
    fn send(&mut self, mut hdr: Header, payload: &[u8]) {
        hdr.len = payload.len() as u32;
        self.send_raw(&hdr.to_bytes(), payload);
    }

    fn send_raw(&mut self, hdr: &[u8], payload: &[u8]) {
        self.mem.write_slice(hdr, GuestAddress(TX_DATA)).unwrap();
        let pay = TX_DATA + 0x100;
        self.mem.write_slice(payload, GuestAddress(pay)).unwrap();
        let mut descs = vec![(TX_DATA, hdr.len() as u32, 0)];
        if !payload.is_empty() {
            descs.push((pay, payload.len() as u32, 0));
        }
        self.tx.post(&self.mem, &descs);
        self.dev.process_tx();
    }

    /// What the device gave the guest since the last call.
    fn recv(&mut self) -> Vec<(Header, Vec<u8>)> {
        let used = self.rx.take_used(&self.mem);
        used.into_iter()
            .map(|(head, len)| {
                let addr = self.rx_heads[&head];
                let mut raw = [0u8; HDR_LEN];
                self.mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
                let hdr = Header::parse(&raw);
                assert_eq!(
                    len as usize,
                    HDR_LEN + hdr.len as usize,
                    "used length of {hdr:?}"
                );
                let mut data = vec![0u8; hdr.len as usize];
                self.mem
                    .read_slice(&mut data, GuestAddress(addr + HDR_LEN as u64))
                    .unwrap();
                (hdr, data)
            })
            .collect()
    }

    /// Plays the event loop: accepts, and tells every socket it may be ready.
    fn pump(&mut self) {
        let m = self.dev.metrics.clone();
        self.dev.muxer.accept(&m);
        let fds: Vec<_> = self.dev.muxer.watched_or_dirty();
        for fd in fds {
            self.dev.muxer.on_socket(fd, true, true, false, &m);
        }
        self.dev.process_rx();
        self.dev.muxer.closed.clear();
    }

    /// Plays the event loop when every host socket hung up.
    fn pump_hung_up(&mut self) {
        let m = self.dev.metrics.clone();
        for fd in self.dev.muxer.watched_or_dirty() {
            self.dev.muxer.on_socket(fd, true, false, true, &m);
        }
        self.dev.process_rx();
        self.dev.muxer.closed.clear();
    }

    /// A guest header from guest port `src` to host port `dst`.
    fn guest(&self, op: u16, src: u32, dst: u32) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port: src,
            dst_port: dst,
            kind: TYPE_STREAM,
            op,
            buf_alloc: 256 * 1024,
            ..Header::default()
        }
    }

    /// A guest connection from port 1000 to host port `port`, where `listener` listens.
    fn guest_connects(&mut self, port: u32) -> UnixStream {
        let listener = UnixListener::bind(self.path(&format!("v.sock_{port}"))).unwrap();
        self.post_rx(4);
        self.send(self.guest(op::REQUEST, 1000, port), &[]);
        let got = self.recv();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.op, op::RESPONSE, "{got:?}");
        let (stream, _) = listener.accept().unwrap();
        stream
    }
}

impl Muxer {
    /// Every socket the muxer has (for the hand-played event loop).
    fn watched_or_dirty(&mut self) -> Vec<std::os::fd::RawFd> {
        let mut fds: Vec<_> = self.dirty.drain().collect();
        fds.extend(self.watched.keys().copied());
        for fd in &fds {
            let want = self.interest(*fd);
            match want {
                Some(set) => self.watched.insert(*fd, set),
                None => self.watched.remove(fd),
            };
        }
        fds.sort_unstable();
        fds.dedup();
        fds
    }
}

#[test]
fn test_config_space_holds_the_guest_cid() {
    let rig = Rig::new();
    let mut b = [0u8; 8];
    rig.dev.read_config(0, &mut b);
    assert_eq!(u64::from_le_bytes(b), CID);
    assert_eq!(rig.dev.device_type(), 19);
    assert_eq!(rig.dev.queue_max_sizes().len(), 3);
}

#[test]
fn test_guest_connection_reaches_the_host_socket_both_ways() {
    let mut rig = Rig::new();
    let mut host = rig.guest_connects(52);
    rig.send(rig.guest(op::RW, 1000, 52), b"hello");
    let mut b = [0u8; 5];
    host.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hello");
    host.write_all(b"world").unwrap();
    rig.pump();
    let got = rig.recv();
    assert_eq!(got.len(), 1);
    let (hdr, data) = &got[0];
    assert_eq!((hdr.op, hdr.src_port, hdr.dst_port), (op::RW, 52, 1000));
    assert_eq!((hdr.src_cid, hdr.dst_cid), (HOST_CID, CID));
    assert_eq!(data, b"world");
    assert_eq!(hdr.buf_alloc, TX_BUF_SIZE);
    assert_eq!(hdr.fwd_cnt, 5, "the host socket took the guest's 5 bytes");
}

#[test]
fn test_guest_connection_to_a_port_nobody_listens_on_is_reset() {
    let mut rig = Rig::new();
    rig.post_rx(1);
    rig.send(rig.guest(op::REQUEST, 1000, 77), &[]);
    let got = rig.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].0.op, got[0].0.dst_port, got[0].0.src_port),
        (op::RST, 1000, 77)
    );
    assert_eq!(rig.metric(|m| &m.guest_refused), 1);
    assert_eq!(rig.dev.muxer.connections(), 0);
}

#[test]
fn test_host_connection_is_forwarded_and_answered_ok() {
    let mut rig = Rig::new();
    rig.post_rx(2);
    let mut host = UnixStream::connect(rig.path("v.sock")).unwrap();
    host.write_all(b"CONNECT 1234\nearly").unwrap();
    rig.pump();
    rig.pump();
    let got = rig.recv();
    assert_eq!(got.len(), 1, "{got:?}");
    let req = got[0].0;
    assert_eq!(
        (req.op, req.dst_port, req.src_port),
        (op::REQUEST, 1234, FIRST_HOST_PORT)
    );
    let mut resp = rig.guest(op::RESPONSE, 1234, FIRST_HOST_PORT);
    resp.src_port = 1234;
    rig.send(resp, &[]);
    let mut line = [0u8; 14];
    host.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"OK 1073741824\n");
    // What the host wrote after its CONNECT line is the stream's start.
    rig.pump();
    let got = rig.recv();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0.op, got[0].1.as_slice()), (op::RW, &b"early"[..]));
}

#[test]
fn test_host_connection_the_guest_refuses_is_closed() {
    let mut rig = Rig::new();
    rig.post_rx(1);
    let mut host = UnixStream::connect(rig.path("v.sock")).unwrap();
    host.write_all(b"CONNECT 9\n").unwrap();
    rig.pump();
    assert_eq!(rig.recv()[0].0.op, op::REQUEST);
    rig.send(rig.guest(op::RST, 9, FIRST_HOST_PORT), &[]);
    rig.pump();
    let mut b = [0u8; 1];
    assert_eq!(
        host.read(&mut b).unwrap(),
        0,
        "the host sees its connection end"
    );
    assert_eq!(rig.dev.muxer.connections(), 0);
}

#[test]
fn test_host_lines_that_are_not_connect_are_closed() {
    for line in [
        &b"HELLO 5\n"[..],
        b"CONNECT x\n",
        &[b'C'; 40][..],
        b"CONNECT 99999999999\n",
    ] {
        let mut rig = Rig::new();
        let mut host = UnixStream::connect(rig.path("v.sock")).unwrap();
        host.write_all(line).unwrap();
        rig.pump();
        rig.pump();
        let mut b = [0u8; 1];
        // Closed with bytes unread, the host may see a reset rather than an end.
        let end = host.read(&mut b);
        assert!(
            matches!(end, Ok(0)) || end.is_err(),
            "{line:?} is refused: {end:?}"
        );
        assert_eq!(rig.metric(|m| &m.host_refused), 1);
    }
}

#[test]
fn test_host_connection_before_the_driver_runs_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut muxer = Muxer::bind(&dir.path().join("v.sock"), CID).unwrap();
    let m = VsockMetrics::default();
    let mut host = UnixStream::connect(dir.path().join("v.sock")).unwrap();
    host.write_all(b"CONNECT 5\n").unwrap();
    muxer.accept(&m);
    let fd = *muxer.dirty.iter().next().unwrap();
    muxer.on_socket(fd, true, false, false, &m);
    muxer.closed.clear();
    let mut b = [0u8; 1];
    assert_eq!(host.read(&mut b).unwrap(), 0);
    assert_eq!(m.host_refused.load(Ordering::Relaxed), 1);
}

#[test]
fn test_guest_over_its_credit_is_reset_and_memory_stays_bounded() {
    let mut rig = Rig::new();
    let _host = rig.guest_connects(60); // never reads
    let chunk = vec![7u8; 60 * 1024];
    let mut sent = 0;
    let mut got = Vec::new();
    while rig.metric(|m| &m.conns_killed) == 0 && sent < 64 {
        rig.post_rx(1);
        rig.send(rig.guest(op::RW, 1000, 60), &chunk);
        got.extend(rig.recv());
        sent += 1;
    }
    assert!(sent < 64, "the connection was never reset");
    assert_eq!(got.last().map(|(h, _)| h.op), Some(op::RST), "{got:?}");
    assert_eq!(rig.dev.muxer.connections(), 0);
}

#[test]
fn test_guest_keeping_to_its_credit_stops_at_the_limit() {
    let mut rig = Rig::new();
    let host = rig.guest_connects(61); // never reads
    let mut credit = i64::from(TX_BUF_SIZE);
    let mut fwd = 0u32;
    let mut total = 0u64;
    // The guest sends what its credit allows, as Linux does, until it has none.
    for _ in 0..200 {
        let n = credit.min(32 * 1024) as usize;
        if n == 0 {
            break;
        }
        rig.send(rig.guest(op::RW, 1000, 61), &vec![1u8; n]);
        total += n as u64;
        credit -= n as i64;
        rig.post_rx(1);
        rig.pump();
        for (h, _) in rig.recv() {
            if h.op == op::CREDIT_UPDATE {
                credit += i64::from(h.fwd_cnt.wrapping_sub(fwd));
                fwd = h.fwd_cnt;
            }
        }
    }
    assert_eq!(credit, 0, "the guest ran out of credit");
    assert_eq!(rig.dev.muxer.connections(), 1, "and was not reset");
    assert_eq!(rig.metric(|m| &m.conns_killed), 0);
    // What the host socket did not take is at most one buffer.
    assert!(
        total - u64::from(fwd) <= u64::from(TX_BUF_SIZE),
        "{total} sent, {fwd} taken"
    );
    drop(host);
}

#[test]
fn test_packets_that_name_nothing_are_answered_as_the_spec_says() {
    let mut rig = Rig::new();
    rig.post_rx(8);
    // Another guest's CID as the source: dropped unanswered.
    let mut h = rig.guest(op::REQUEST, 1, 2);
    h.src_cid = 99;
    rig.send(h, &[]);
    // A destination that is not the host: refused.
    let mut h = rig.guest(op::REQUEST, 1, 3);
    h.dst_cid = 42;
    rig.send(h, &[]);
    // A socket type the device does not offer: refused.
    let mut h = rig.guest(op::REQUEST, 1, 4);
    h.kind = 2;
    rig.send(h, &[]);
    // Data, and an unknown operation, for no connection: refused; an RST for none: nothing.
    rig.send(rig.guest(op::RW, 1, 5), b"x");
    rig.send(rig.guest(99, 1, 6), &[]);
    rig.send(rig.guest(op::RST, 1, 7), &[]);
    let got: Vec<_> = rig
        .recv()
        .into_iter()
        .map(|(h, _)| (h.op, h.src_port))
        .collect();
    assert_eq!(
        got,
        vec![(op::RST, 3), (op::RST, 4), (op::RST, 5), (op::RST, 6)]
    );
}

#[test]
fn test_unknown_operation_on_a_connection_resets_it() {
    let mut rig = Rig::new();
    let mut host = rig.guest_connects(62);
    rig.send(rig.guest(42, 1000, 62), &[]);
    assert_eq!(rig.recv()[0].0.op, op::RST);
    rig.pump();
    let mut b = [0u8; 1];
    assert_eq!(host.read(&mut b).unwrap(), 0);
}

#[test]
fn test_bad_lengths_are_dropped_and_the_device_keeps_serving() {
    let mut rig = Rig::new();
    // Shorter than a header.
    rig.send_raw(&[0u8; 20], &[]);
    // A length past what the chain holds.
    let mut h = rig.guest(op::RW, 1000, 63);
    h.len = 1 << 20;
    rig.send_raw(&h.to_bytes(), b"abc");
    assert_eq!(rig.metric(|m| &m.bad_chains), 2);
    // A receive buffer smaller than a header is returned unused.
    rig.rx.post(&rig.mem, &[(RX_BUFS + 0x1_0000, 8, WRITE)]);
    rig.send(rig.guest(op::REQUEST, 1, 64), &[]);
    assert_eq!(rig.rx.take_used(&rig.mem).len(), 1);
    assert_eq!(rig.metric(|m| &m.bad_chains), 3);
    // The refusal waited for a buffer that can hold it.
    rig.post_rx(1);
    rig.dev.process_rx();
    assert_eq!(rig.recv()[0].0.op, op::RST);
    let _host = rig.guest_connects(65);
}

#[test]
fn test_a_flood_of_requests_keeps_what_waits_bounded() {
    let mut rig = Rig::new();
    // No receive buffers: every refusal waits, up to the bound.
    for i in 0..(MAX_RSTS as u32 + 500) {
        rig.send(rig.guest(op::REQUEST, i, 70), &[]);
    }
    assert_eq!(rig.metric(|m| &m.rsts_dropped), 500);
    rig.post_rx(8);
    rig.dev.process_rx();
    assert_eq!(rig.recv().len(), 8);
}

#[test]
fn test_guest_half_close_ends_the_host_readers_stream_and_keeps_its_own() {
    let mut rig = Rig::new();
    let mut host = rig.guest_connects(66);
    rig.send(rig.guest(op::RW, 1000, 66), b"last");
    let mut shut = rig.guest(op::SHUTDOWN, 1000, 66);
    shut.flags = SHUTDOWN_SEND;
    rig.send(shut, &[]);
    let mut all = Vec::new();
    host.read_to_end(&mut all).unwrap();
    assert_eq!(
        all, b"last",
        "the host reader sees the guest's bytes, then its end"
    );
    host.write_all(b"reply").unwrap();
    rig.post_rx(2);
    rig.pump();
    let got = rig.recv();
    assert_eq!((got[0].0.op, got[0].1.as_slice()), (op::RW, &b"reply"[..]));
}

#[test]
fn test_host_close_is_a_shutdown_and_the_guest_close_ends_it() {
    let mut rig = Rig::new();
    let host = rig.guest_connects(67);
    host.shutdown(std::net::Shutdown::Write).unwrap();
    rig.post_rx(2);
    rig.pump();
    let got = rig.recv();
    assert_eq!((got[0].0.op, got[0].0.flags), (op::SHUTDOWN, SHUTDOWN_SEND));
    let mut shut = rig.guest(op::SHUTDOWN, 1000, 67);
    shut.flags = SHUTDOWN_SEND | SHUTDOWN_RCV;
    rig.send(shut, &[]);
    let got = rig.recv();
    assert_eq!(got.last().unwrap().0.op, op::RST);
    rig.pump();
    assert_eq!(rig.dev.muxer.connections(), 0);
}

#[test]
fn test_restored_device_tells_the_guest_the_transport_reset() {
    let state = Rig::new().dev.save_state().unwrap();
    let mut rig = Rig::with(|d| d.restore_state(state).unwrap());
    // Not before the event loop runs (the rest of the VM is being restored meanwhile).
    assert_eq!(rig.ev.take_used(&rig.mem), vec![]);
    rig.dev.on_activate();
    let used = rig.ev.take_used(&rig.mem);
    assert_eq!(used, vec![(0, 4)]);
    let id: u32 = rig.mem.read_obj(GuestAddress(0x3000)).unwrap();
    assert_eq!(id, EVENT_TRANSPORT_RESET);
    assert_eq!(rig.metric(|m| &m.transport_resets), 1);
    // Until the driver posts its event buffer again, the guest is given nothing: a host
    // connection waits.
    rig.post_rx(2);
    let mut host = UnixStream::connect(rig.path("v.sock")).unwrap();
    host.write_all(b"CONNECT 7\n").unwrap();
    rig.pump();
    assert_eq!(rig.recv(), vec![]);
    rig.ev.post(&rig.mem, &[(0x3000, 8, WRITE)]);
    rig.dev.on_event_queue();
    let got = rig.recv();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0.op, got[0].0.dst_port), (op::REQUEST, 7));
}

#[test]
fn test_a_stale_socket_file_is_replaced_and_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.sock");
    drop(UnixListener::bind(&path).unwrap());
    let live = Muxer::bind(&path, CID).unwrap();
    let err = Muxer::bind(&path, CID).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    drop(live);
    assert!(path.exists(), "the socket file stays, as in Firecracker");
    Muxer::bind(&path, CID).expect("a stale socket file is replaced");
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    assert!(Muxer::bind(&dir.path().join("file"), CID).is_err());
    std::os::unix::fs::symlink(&path, dir.path().join("link")).unwrap();
    assert!(
        Muxer::bind(&dir.path().join("link"), CID).is_err(),
        "a link is never followed"
    );
}

#[test]
fn test_a_guest_without_room_is_asked_for_credit_once_per_wait() {
    let mut rig = Rig::new();
    let mut host = rig.guest_connects(68);
    // The guest has room for 8 bytes; the host has more to say.
    let mut credit = rig.guest(op::CREDIT_UPDATE, 1000, 68);
    credit.buf_alloc = 8;
    rig.send(credit, &[]);
    host.write_all(b"0123456789abcdef").unwrap();
    rig.post_rx(4);
    rig.pump();
    let got: Vec<_> = rig.recv().into_iter().map(|(h, d)| (h.op, d)).collect();
    assert_eq!(
        got,
        vec![(op::RW, b"01234567".to_vec()), (op::CREDIT_REQUEST, vec![])]
    );
    // The guest answers with the same credit (its reader has not read): no new request.
    rig.send(credit, &[]);
    rig.pump();
    assert_eq!(rig.recv(), vec![]);
    // Its reader frees room: the rest comes (filling it again: a new wait, a new request).
    credit.fwd_cnt = 8;
    rig.send(credit, &[]);
    rig.pump();
    let got: Vec<_> = rig.recv().into_iter().map(|(h, d)| (h.op, d)).collect();
    assert_eq!(
        got,
        vec![(op::RW, b"89abcdef".to_vec()), (op::CREDIT_REQUEST, vec![])]
    );
}

#[test]
fn test_a_host_that_writes_and_closes_is_read_to_its_end() {
    let mut rig = Rig::new();
    let mut host = rig.guest_connects(69);
    host.write_all(b"bye").unwrap();
    drop(host);
    rig.post_rx(4);
    // The socket hung up: it leaves the event loop, and is read until its end all the same.
    rig.pump_hung_up();
    rig.dev.process_rx();
    let got: Vec<_> = rig
        .recv()
        .into_iter()
        .map(|(h, d)| (h.op, h.flags, d))
        .collect();
    assert_eq!(
        got,
        vec![
            (op::RW, 0, b"bye".to_vec()),
            (op::SHUTDOWN, SHUTDOWN_SEND, vec![])
        ]
    );
}
