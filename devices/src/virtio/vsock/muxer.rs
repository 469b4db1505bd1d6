//! The host side of the device: the Unix socket at `uds_path` that host programs connect to,
//! the connections, and which of them has something for the guest.
//!
//! A host program connects to `uds_path` and writes `CONNECT <port>\n`; the guest is sent a
//! REQUEST, and if a guest program accepts it the host program reads `OK <host port>\n` before
//! the stream; if not (an RST, or no answer within [`REQUEST_TIMEOUT`]) its socket is
//! closed. A guest REQUEST to the host (CID 2) port P connects to `<uds_path>_P`; if nothing
//! listens there the guest is sent an RST.
//!
//! Everything is bounded by the guest's and the host's own limits: at most
//! [`MAX_CONNECTIONS`] connections and [`MAX_PENDING`] host sockets that have not said where
//! to connect, RSTs for packets that name no connection at most [`MAX_RSTS`] at a time (more
//! are dropped: the guest times out), and each connection holds at most its credit.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

use socket2::{Domain, SockAddr, Socket, Type};

use super::connection::{Connection, State};
use super::defs::{add, HOST_CID, REQUEST_TIMEOUT};
use super::metrics::VsockMetrics;
use super::packet::{op, Header, TYPE_STREAM};

/// Most connections at once; more are refused (RST to the guest, closed to the host).
pub const MAX_CONNECTIONS: usize = 1024;
/// Most host sockets that have connected but not yet said `CONNECT <port>`.
pub const MAX_PENDING: usize = 64;
/// Most RSTs waiting for receive buffers.
pub const MAX_RSTS: usize = 1024;
/// The longest `CONNECT <port>\n` line.
const MAX_LINE: usize = 32;
/// The first port host connections get (as Firecracker: 2^30 and up).
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// A connection's ports: ours (the host side's) and the guest's.
pub type Key = (u32, u32);

/// A host socket that has not said where to connect.
#[derive(Debug)]
struct Pending {
    stream: UnixStream,
    line: Vec<u8>,
}

/// The host side of a vsock device.
#[derive(Debug)]
pub struct Muxer {
    uds_path: PathBuf,
    listener: Socket,
    guest_cid: u64,
    /// The driver is ready: host connections can be asked for.
    pub(super) active: bool,
    pending: HashMap<RawFd, Pending>,
    conns: HashMap<Key, Connection>,
    by_fd: HashMap<RawFd, Key>,
    /// Connections with something for the guest, each once, in turn.
    rxq: VecDeque<Key>,
    queued: HashSet<Key>,
    rsts: VecDeque<Header>,
    next_port: u32,
    /// File descriptors whose event-loop registration may have to change.
    pub(super) dirty: HashSet<RawFd>,
    /// Sockets done with, to take off the event loop before they close.
    pub(super) closed: Vec<UnixStream>,
    /// What the event loop watches of each socket now.
    pub(super) watched: HashMap<RawFd, u32>,
    /// The earliest time a connection may have to be killed ([`Muxer::expire`]).
    pub(super) deadline: Option<Instant>,
}

impl Muxer {
    /// Listens at `uds_path`: a socket file left there by a process that is gone is replaced;
    /// anything else there is an error. The socket file stays when the VM ends (as in
    /// Firecracker), and is replaced by the next VM that listens there.
    pub fn bind(uds_path: &Path, guest_cid: u64) -> io::Result<Self> {
        remove_stale_socket(uds_path)?;
        let listener = Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None)?;
        listener.bind(&SockAddr::unix(uds_path)?)?;
        listener.listen(128)?;
        Ok(Muxer {
            uds_path: uds_path.to_path_buf(),
            listener,
            guest_cid,
            active: false,
            pending: HashMap::new(),
            conns: HashMap::new(),
            by_fd: HashMap::new(),
            rxq: VecDeque::new(),
            queued: HashSet::new(),
            rsts: VecDeque::new(),
            next_port: FIRST_LOCAL_PORT,
            dirty: HashSet::new(),
            closed: Vec::new(),
            watched: HashMap::new(),
            deadline: None,
        })
    }

    /// Where host programs connect.
    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// The listening socket's descriptor.
    pub fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Accepts what connected to `uds_path`.
    pub fn accept(&mut self, m: &VsockMetrics) {
        loop {
            let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
            let stream = match self.listener.accept4(flags) {
                Ok((s, _)) => UnixStream::from(OwnedFd::from(s)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!(
                        "vsock: accepting on {} failed: {e}",
                        self.uds_path.display()
                    );
                    add(&m.host_refused, 1);
                    return;
                }
            };
            if self.pending.len() >= MAX_PENDING || self.conns.len() >= MAX_CONNECTIONS {
                log::warn!("vsock: too many host connections; one more was closed");
                add(&m.host_refused, 1);
                continue;
            }
            let fd = stream.as_raw_fd();
            self.pending.insert(
                fd,
                Pending {
                    stream,
                    line: Vec::new(),
                },
            );
            self.dirty.insert(fd);
        }
    }

    /// Serves an event on one of the sockets (not the listener).
    pub fn on_socket(
        &mut self,
        fd: RawFd,
        readable: bool,
        writable: bool,
        hung_up: bool,
        m: &VsockMetrics,
    ) {
        if self.pending.contains_key(&fd) {
            self.read_connect_line(fd, m);
            return;
        }
        let Some(&key) = self.by_fd.get(&fd) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if hung_up {
            conn.hung_up = true;
            conn.readable = true;
        }
        if readable {
            conn.readable = true;
        }
        if writable || hung_up {
            if let Err(e) = conn.flush() {
                log::debug!("vsock: port {}: {e}", conn.local_port);
                add(&m.conns_killed, 1);
                conn.kill();
            }
        }
        conn.ask_credit();
        self.touch(key);
    }

    /// Reads a waiting host socket's `CONNECT <port>\n`, a byte at a time so that nothing of
    /// the stream after it is taken.
    fn read_connect_line(&mut self, fd: RawFd, m: &VsockMetrics) {
        let Some(p) = self.pending.get_mut(&fd) else {
            return;
        };
        let mut byte = [0u8; 1];
        let port = loop {
            match p.stream.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break parse_connect(&p.line),
                Ok(1) if p.line.len() < MAX_LINE => p.line.push(byte[0]),
                Ok(_) => break None,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break None,
            }
        };
        let Some(p) = self.pending.remove(&fd) else {
            return;
        };
        let accepted = match port {
            None => Err("it did not start with CONNECT <port>"),
            Some(_) if !self.active => Err("the guest's vsock driver is not running"),
            Some(peer) => self
                .free_local_port(peer)
                .map(|local| (peer, local))
                .ok_or("no free port"),
        };
        let (peer_port, local_port) = match accepted {
            Ok(ports) => ports,
            Err(why) => {
                log::debug!("vsock: a host connection was closed: {why}");
                add(&m.host_refused, 1);
                self.closed.push(p.stream);
                return;
            }
        };
        // The guest has REQUEST_TIMEOUT to answer once the REQUEST is sent (`next_rx`).
        let conn = Connection::local_init(p.stream, self.guest_cid, local_port, peer_port);
        self.insert(conn);
        add(&m.conns_added, 1);
    }

    fn free_local_port(&mut self, peer_port: u32) -> Option<u32> {
        for _ in 0..=MAX_CONNECTIONS {
            let port = self.next_port;
            self.next_port = self.next_port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.contains_key(&(port, peer_port)) {
                return Some(port);
            }
        }
        None
    }

    fn insert(&mut self, conn: Connection) {
        let key = (conn.local_port, conn.peer_port);
        let fd = conn.stream.as_raw_fd();
        self.by_fd.insert(fd, key);
        self.conns.insert(key, conn);
        self.touch(key);
    }

    /// Queues `key` for the guest if it has something, forgets it if it is over, and marks
    /// its socket's registration for a look.
    fn touch(&mut self, key: Key) {
        let Some(conn) = self.conns.get(&key) else {
            return;
        };
        self.dirty.insert(conn.stream.as_raw_fd());
        if let Some(t) = conn.expiry {
            self.deadline = Some(self.deadline.map_or(t, |d| d.min(t)));
        }
        if conn.is_done() {
            self.forget(key);
        } else if conn.has_rx() && self.queued.insert(key) {
            self.rxq.push_back(key);
        }
    }

    fn forget(&mut self, key: Key) {
        if let Some(conn) = self.conns.remove(&key) {
            self.by_fd.remove(&conn.stream.as_raw_fd());
            self.closed.push(conn.stream);
        }
    }

    /// What the event loop should watch of socket `fd` (IN and OUT as epoll flags), or `None`
    /// to take it off.
    pub fn interest(&self, fd: RawFd) -> Option<u32> {
        if self.pending.contains_key(&fd) {
            return Some(libc::EPOLLIN as u32);
        }
        let conn = self.conns.get(self.by_fd.get(&fd)?)?;
        if conn.hung_up {
            return None;
        }
        let mut set = 0;
        if conn.wants_read() && !conn.readable {
            set |= libc::EPOLLIN as u32;
        }
        if conn.wants_write() {
            set |= libc::EPOLLOUT as u32;
        }
        Some(set)
    }

    /// Takes a packet the guest sent.
    pub fn send(&mut self, hdr: &Header, payload: &[u8], m: &VsockMetrics) {
        if hdr.src_cid != self.guest_cid {
            add(&m.tx_dropped, 1);
            return;
        }
        if hdr.kind != TYPE_STREAM || hdr.dst_cid != HOST_CID {
            // Nothing here can be that connection: refuse it, so its connect() fails at once.
            if hdr.op != op::RST {
                self.queue_rst(hdr, m);
            }
            add(&m.tx_dropped, 1);
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        let Some(conn) = self.conns.get_mut(&key) else {
            match hdr.op {
                op::REQUEST => self.connect_to_host(hdr, m),
                op::RST => {}
                _ => self.queue_rst(hdr, m),
            }
            return;
        };
        if conn.state == State::Killed {
            return;
        }
        if hdr.op == op::RW {
            add(&m.tx_bytes, payload.len() as u64);
        }
        if let Err(e) = conn.send(hdr, payload) {
            log::debug!("vsock: port {} of the guest: {e}; reset", hdr.src_port);
            add(&m.conns_killed, 1);
            conn.kill();
        }
        conn.ask_credit();
        self.touch(key);
    }

    /// A guest REQUEST to host port `dst_port`: connects to `<uds_path>_<port>`.
    fn connect_to_host(&mut self, hdr: &Header, m: &VsockMetrics) {
        if self.conns.len() >= MAX_CONNECTIONS {
            add(&m.guest_refused, 1);
            return self.queue_rst(hdr, m);
        }
        let mut path = OsString::from(self.uds_path.as_os_str());
        path.push(format!("_{}", hdr.dst_port));
        match connect_nonblocking(Path::new(&path)) {
            Ok(stream) => {
                self.insert(Connection::peer_init(stream, self.guest_cid, hdr));
                add(&m.conns_added, 1);
            }
            Err(e) => {
                log::debug!("vsock: the guest's connection to {path:?} was refused: {e}");
                add(&m.guest_refused, 1);
                self.queue_rst(hdr, m);
            }
        }
    }

    fn queue_rst(&mut self, hdr: &Header, m: &VsockMetrics) {
        if self.rsts.len() >= MAX_RSTS {
            add(&m.rsts_dropped, 1);
            return;
        }
        let mut rst = hdr.reply(op::RST);
        rst.src_cid = HOST_CID;
        rst.dst_cid = self.guest_cid;
        self.rsts.push_back(rst);
    }

    /// Whether anything waits for a receive buffer.
    pub fn has_rx(&self) -> bool {
        !self.rsts.is_empty() || !self.rxq.is_empty()
    }

    /// The next packet for the guest, its payload in `payload`: RSTs first, then the
    /// connections in turn, one packet each.
    pub fn next_rx(&mut self, payload: &mut [u8]) -> Option<Header> {
        if let Some(rst) = self.rsts.pop_front() {
            return Some(rst);
        }
        while let Some(key) = self.rxq.pop_front() {
            self.queued.remove(&key);
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            let hdr = conn.next_rx(payload);
            if hdr.is_some_and(|h| h.op == op::REQUEST) {
                conn.expiry = Some(Instant::now() + REQUEST_TIMEOUT);
            }
            conn.ask_credit();
            self.touch(key);
            if hdr.is_some() {
                return hdr;
            }
        }
        None
    }

    /// Kills what waited too long: a host connection the guest never answered, a close the
    /// guest never finished; its deadline becomes the next time to look.
    pub fn expire(&mut self, now: Instant, m: &VsockMetrics) {
        let mut next: Option<Instant> = None;
        let mut late = Vec::new();
        for (key, conn) in &mut self.conns {
            match conn.expiry {
                Some(t) if t <= now => {
                    conn.expiry = None;
                    late.push(*key);
                }
                Some(t) => next = Some(next.map_or(t, |n| n.min(t))),
                None => {}
            }
        }
        for key in late {
            if let Some(conn) = self.conns.get_mut(&key) {
                log::debug!("vsock: port {} timed out; reset", conn.local_port);
                add(&m.conns_killed, 1);
                conn.kill();
            }
            self.touch(key);
        }
        self.deadline = next;
    }

    /// Drops every connection and waiting host socket: the driver reset the device, or the
    /// guest was told the transport reset.
    pub fn reset(&mut self) {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        keys.into_iter().for_each(|k| self.forget(k));
        let pending: Vec<RawFd> = self.pending.keys().copied().collect();
        for fd in pending {
            if let Some(p) = self.pending.remove(&fd) {
                self.closed.push(p.stream);
            }
        }
        self.rxq.clear();
        self.queued.clear();
        self.rsts.clear();
    }
}

/// `CONNECT <port>`, as Firecracker reads it.
fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let port = line.strip_prefix("CONNECT ")?;
    port.trim().parse().ok()
}

/// Removes a socket file at `path` that nobody listens on; leaves anything else, and says so
/// when it is in the way.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let in_use = || io::Error::new(io::ErrorKind::AddrInUse, "something else is at the path");
    if !meta.file_type().is_socket() {
        return Err(in_use());
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process listens there",
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(_) => Err(in_use()),
    }
}

/// Connects to the Unix socket at `path` without waiting: a listener whose backlog is full
/// refuses like one that is not there.
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None)?;
    socket.connect(&SockAddr::unix(path)?)?;
    Ok(UnixStream::from(OwnedFd::from(socket)))
}
