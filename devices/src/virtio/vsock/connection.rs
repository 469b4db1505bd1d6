//! One stream between a guest port and a host Unix socket: its handshake, both directions with
//! the spec's credit flow control, and how each side closes it.
//!
//! Guest to host: the guest may have [`TX_BUF_SIZE`] bytes in flight (our `buf_alloc`); what the
//! host socket does not take at once waits in `tx_buf`, and only bytes the socket took count in
//! `fwd_cnt`, so a host reader that never reads stops the guest at the credit limit. A guest that
//! sends past its credit has the connection reset. Host to guest: the socket is read only when
//! the guest has credit and a receive buffer, straight into that packet; nothing waits on the
//! host's behalf.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use super::defs::{CLOSE_TIMEOUT, HOST_CID};
use super::packet::{op, Header, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};

/// Bytes the guest may send before the host socket takes them (the `buf_alloc` we advertise).
pub const TX_BUF_SIZE: u32 = 64 * 1024;
/// Bytes the host socket took since the guest last heard our `fwd_cnt` that earn it a
/// credit update unasked.
const CREDIT_UPDATE_BYTES: u32 = 16 * 1024;

/// Where the handshake and the close stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The host connected; the guest has not answered our REQUEST.
    LocalInit,
    /// The guest asked; we owe it a RESPONSE.
    PeerInit,
    /// Data flows (each direction until its side shuts it).
    Established,
    /// It is over: an RST is owed to the guest, then it is forgotten.
    Killed,
}

/// What the connection owes the guest, in the order it is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owed {
    /// An RST (the connection ends).
    pub rst: bool,
    /// A RESPONSE to the guest's REQUEST.
    pub response: bool,
    /// A REQUEST for the host's connection.
    pub request: bool,
    /// A CREDIT_UPDATE.
    pub credit_update: bool,
    /// A CREDIT_REQUEST: data waits for credit the guest has not given.
    pub credit_request: bool,
}

/// One connection.
#[derive(Debug)]
pub struct Connection {
    pub(super) stream: UnixStream,
    pub(super) state: State,
    /// Our port (the host side's) and the guest's.
    pub(super) local_port: u32,
    pub(super) peer_port: u32,
    guest_cid: u64,
    pub(super) owed: Owed,
    /// "OK <port>\n" not yet written to the host socket, ahead of any data.
    ok_line: Vec<u8>,
    /// Guest bytes the host socket has not taken yet; at most [`TX_BUF_SIZE`].
    tx_buf: Vec<u8>,
    /// Guest bytes received, and of those taken by the host socket.
    rx_from_guest: Wrapping<u32>,
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    /// Bytes sent to the guest, and the guest's buffer and how much of it it consumed.
    sent_to_guest: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// The guest will receive no more / send no more.
    pub(super) peer_shut_rcv: bool,
    pub(super) peer_shut_send: bool,
    /// The host socket reached its end: the guest was told SHUTDOWN(SEND).
    pub(super) local_eof: bool,
    /// The host socket may have bytes for the guest (it polled readable).
    pub(super) readable: bool,
    /// The host socket hung up or failed: it is off the event loop.
    pub(super) hung_up: bool,
    /// A CREDIT_REQUEST went out since the guest last had credit: not another until it has.
    asked_credit: bool,
    /// When the connection is killed if it has not moved on (a handshake or a close).
    pub(super) expiry: Option<Instant>,
}

impl Connection {
    /// A connection the host asked for, to guest port `peer_port`: a REQUEST is owed.
    pub fn local_init(stream: UnixStream, guest_cid: u64, local_port: u32, peer_port: u32) -> Self {
        let mut c = Self::new(stream, guest_cid, local_port, peer_port, State::LocalInit);
        c.owed.request = true;
        c
    }

    /// A connection the guest asked for (its REQUEST in `hdr`), connected to a host socket:
    /// a RESPONSE is owed.
    pub fn peer_init(stream: UnixStream, guest_cid: u64, hdr: &Header) -> Self {
        let mut c = Self::new(
            stream,
            guest_cid,
            hdr.dst_port,
            hdr.src_port,
            State::PeerInit,
        );
        c.peer_buf_alloc = hdr.buf_alloc;
        c.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        c.owed.response = true;
        c
    }

    fn new(stream: UnixStream, guest_cid: u64, local: u32, peer: u32, state: State) -> Self {
        Connection {
            stream,
            state,
            local_port: local,
            peer_port: peer,
            guest_cid,
            owed: Owed::default(),
            ok_line: Vec::new(),
            tx_buf: Vec::new(),
            rx_from_guest: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            sent_to_guest: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            peer_shut_rcv: false,
            peer_shut_send: false,
            local_eof: false,
            readable: false,
            hung_up: false,
            asked_credit: false,
            expiry: None,
        }
    }

    /// Ends the connection: the guest is owed an RST, the host socket is closed with it.
    pub fn kill(&mut self) {
        self.state = State::Killed;
        self.owed = Owed {
            rst: true,
            ..Owed::default()
        };
        self.tx_buf = Vec::new();
        self.ok_line = Vec::new();
    }

    /// Bytes the guest can still take from us: its buffer less what is in flight to it. A
    /// guest whose numbers make no sense has none.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.sent_to_guest - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether the host socket should be read for the guest now.
    pub fn wants_read(&self) -> bool {
        self.state == State::Established
            && !self.peer_shut_rcv
            && !self.local_eof
            && self.peer_credit() > 0
    }

    /// Whether the connection has something for the guest.
    pub fn has_rx(&self) -> bool {
        let o = self.owed;
        o.rst
            || o.response
            || o.request
            || o.credit_update
            || o.credit_request
            || (self.readable && self.wants_read())
    }

    /// Whether bytes wait for the host socket to take them.
    pub fn wants_write(&self) -> bool {
        !self.ok_line.is_empty() || !self.tx_buf.is_empty()
    }

    /// Whether it is over and can be forgotten: killed and its RST sent.
    pub fn is_done(&self) -> bool {
        self.state == State::Killed && !self.owed.rst
    }

    fn header(&self, op: u16) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            kind: TYPE_STREAM,
            op,
            buf_alloc: TX_BUF_SIZE,
            fwd_cnt: self.fwd_cnt.0,
            ..Header::default()
        }
    }

    /// The next packet for the guest into `payload` (at most its length, which is not zero):
    /// its header (the payload is `hdr.len` bytes), or `None` if there is nothing to send.
    pub fn next_rx(&mut self, payload: &mut [u8]) -> Option<Header> {
        let op = if std::mem::take(&mut self.owed.rst) {
            op::RST
        } else if std::mem::take(&mut self.owed.response) {
            self.state = State::Established;
            op::RESPONSE
        } else if std::mem::take(&mut self.owed.request) {
            op::REQUEST
        } else if self.readable && self.wants_read() {
            return self.read_data(payload);
        } else if std::mem::take(&mut self.owed.credit_update) {
            op::CREDIT_UPDATE
        } else if std::mem::take(&mut self.owed.credit_request) {
            op::CREDIT_REQUEST
        } else {
            return None;
        };
        let hdr = self.header(op);
        self.last_fwd_cnt_sent = self.fwd_cnt;
        Some(hdr)
    }

    /// Reads host bytes for the guest: an RW, a SHUTDOWN(SEND) at the socket's end, an RST if it
    /// failed, or nothing if it had nothing after all.
    fn read_data(&mut self, payload: &mut [u8]) -> Option<Header> {
        let room = payload.len().min(self.peer_credit() as usize);
        match self.stream.read(&mut payload[..room]) {
            Ok(0) => {
                self.local_eof = true;
                self.readable = false;
                let mut hdr = self.header(op::SHUTDOWN);
                hdr.flags = SHUTDOWN_SEND;
                self.last_fwd_cnt_sent = self.fwd_cnt;
                if self.peer_shut_send {
                    // Both directions are done; the guest answers with an RST, or times out.
                    self.expiry = Some(Instant::now() + CLOSE_TIMEOUT);
                }
                Some(hdr)
            }
            Ok(n) => {
                // A short read most likely emptied the socket: wait for it to poll again. A
                // socket that hung up is off the event loop: it is read until its end.
                if n < room && !self.hung_up {
                    self.readable = false;
                }
                self.sent_to_guest += Wrapping(n as u32);
                let mut hdr = self.header(op::RW);
                hdr.len = n as u32;
                self.last_fwd_cnt_sent = self.fwd_cnt;
                Some(hdr)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                None
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => {
                log::debug!(
                    "vsock: reading the host socket of port {} failed: {e}",
                    self.local_port
                );
                self.kill();
                self.owed.rst = false;
                Some(self.header(op::RST))
            }
        }
    }

    /// Takes a packet the guest sent on this connection (its header checked by the caller
    /// for type and addresses). What it owes back is in `owed`.
    pub fn send(&mut self, hdr: &Header, payload: &[u8]) -> Result<(), Kill> {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if self.peer_credit() > 0 {
            self.asked_credit = false;
        }
        match (self.state, hdr.op) {
            (_, op::RST) => {
                self.state = State::Killed;
                self.owed = Owed::default();
                Ok(())
            }
            (State::LocalInit, op::RESPONSE) => {
                self.state = State::Established;
                self.expiry = None;
                self.ok_line = format!("OK {}\n", self.local_port).into_bytes();
                self.flush()
            }
            (State::Established, op::RW) if !self.peer_shut_send => self.take_data(payload),
            (State::Established, op::SHUTDOWN) => {
                self.peer_shut_rcv |= hdr.flags & SHUTDOWN_RCV != 0;
                self.peer_shut_send |= hdr.flags & SHUTDOWN_SEND != 0;
                self.after_peer_shutdown()
            }
            (State::Established | State::PeerInit, op::CREDIT_UPDATE) => Ok(()),
            (State::Established | State::PeerInit, op::CREDIT_REQUEST) => {
                self.owed.credit_update = true;
                Ok(())
            }
            (state, op) => Err(Kill::Unexpected(state, op)),
        }
    }

    /// The guest shut one or both directions: shut the host socket's writing once the guest's
    /// bytes are out; when it shut both, the connection ends with our RST.
    fn after_peer_shutdown(&mut self) -> Result<(), Kill> {
        if !self.peer_shut_send || self.wants_write() {
            return Ok(());
        }
        if self.peer_shut_rcv || self.local_eof {
            self.kill();
            return Ok(());
        }
        // Half closed: the host reader sees its end; the guest still reads.
        let _ = self.stream.shutdown(Shutdown::Write);
        Ok(())
    }

    fn take_data(&mut self, payload: &[u8]) -> Result<(), Kill> {
        if payload.is_empty() {
            return Ok(());
        }
        let buffered = self.tx_buf.len() + self.ok_line.len();
        if buffered + payload.len() > TX_BUF_SIZE as usize {
            return Err(Kill::CreditExceeded);
        }
        self.rx_from_guest += Wrapping(payload.len() as u32);
        self.tx_buf.extend_from_slice(payload);
        self.flush()
    }

    /// Writes what waits to the host socket, as much as it takes.
    pub fn flush(&mut self) -> Result<(), Kill> {
        while !self.ok_line.is_empty() {
            match write_some(&mut self.stream, &self.ok_line)? {
                0 => return Ok(()),
                n => drop(self.ok_line.drain(..n)),
            }
        }
        let mut written = 0;
        while written < self.tx_buf.len() {
            match write_some(&mut self.stream, &self.tx_buf[written..])? {
                0 => break,
                n => written += n,
            }
        }
        if written > 0 {
            self.tx_buf.drain(..written);
            if self.tx_buf.is_empty() {
                self.tx_buf.shrink_to(TX_BUF_SIZE as usize / 4);
            }
            self.fwd_cnt += Wrapping(written as u32);
            let unheard = (self.fwd_cnt - self.last_fwd_cnt_sent).0;
            let guest_sees_free =
                TX_BUF_SIZE.saturating_sub((self.rx_from_guest - self.last_fwd_cnt_sent).0);
            if unheard >= CREDIT_UPDATE_BYTES || guest_sees_free < CREDIT_UPDATE_BYTES {
                self.owed.credit_update = true;
            }
        }
        if self.peer_shut_send && !self.wants_write() {
            return self.after_peer_shutdown();
        }
        Ok(())
    }

    /// Data waits for credit the guest has not given: ask for it, once per wait (the guest
    /// answers with its credit, and sends more unasked as its reader frees room).
    pub fn ask_credit(&mut self) {
        if self.readable
            && !self.asked_credit
            && self.state == State::Established
            && !self.peer_shut_rcv
            && self.peer_credit() == 0
        {
            self.asked_credit = true;
            self.owed.credit_request = true;
        }
    }
}

/// Writes part of `buf`: the bytes taken, 0 if the socket is full.
fn write_some(stream: &mut UnixStream, buf: &[u8]) -> Result<usize, Kill> {
    loop {
        return match stream.write(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(Kill::Write(e.kind())),
        };
    }
}

/// Why a connection ends with an RST.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Kill {
    /// The guest sent more than its credit.
    #[error("the guest sent more than its credit")]
    CreditExceeded,
    /// The host socket refused bytes (it closed).
    #[error("writing the host socket failed: {0}")]
    Write(io::ErrorKind),
    /// A packet that makes no sense where the connection stands.
    #[error("operation {1} in state {0:?}")]
    Unexpected(State, u16),
}
