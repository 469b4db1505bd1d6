//! The metadata service's endpoint on the guest's link: it answers ARP for the service's
//! address itself and runs TCP port 80 with `smoltcp` (on IP packets: Ethernet is this file's),
//! serving HTTP from [`super::guest_http`].
//!
//! It runs on the VMM thread, inside the network device's transmit path, and only when the
//! guest sends a frame to it: every answer the guest's frame causes is made then and waits
//! here until the device delivers it. A virtual link loses nothing, so TCP's timers never
//! have to fire for the service to work; a connection the guest abandons holds one of the
//! [`CONNECTIONS`] until the guest opens more than that many, and then goes.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use fennec_devices::virtio::net::FrameService;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpCidr};

use super::document::Mmds;
use super::guest_http::{self, Parsed, MAX_REQUEST};

/// The MAC address the service answers ARP with (locally administered, unicast).
pub const MMDS_MAC: [u8; 6] = [0x06, 0x01, 0x23, 0x45, 0x67, 0x01];
const PORT: u16 = 80;
/// Connections served at once.
pub const CONNECTIONS: usize = 8;
const TX_BUFFER: usize = 16 * 1024;
/// Frames for the guest kept while it posts no receive buffers; beyond, new ones are dropped
/// (TCP sends them again when the guest asks).
const MAX_QUEUED: usize = 1024;
/// Rounds of the stack per frame from the guest at most.
const MAX_ROUNDS: usize = 256;
/// The link's MTU, as the guest's virtio-net interface has it.
const MTU: usize = 1500;
const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];

/// IP packets between the stack and this file.
#[derive(Default)]
struct Link {
    from_guest: VecDeque<Vec<u8>>,
    to_guest: VecDeque<Vec<u8>>,
}

struct RxToken(Vec<u8>);
struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let r = f(&mut packet);
        self.0.push_back(packet);
        r
    }
}

impl phy::Device for Link {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let packet = self.from_guest.pop_front()?;
        Some((RxToken(packet), TxToken(&mut self.to_guest)))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.to_guest))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut checksum = ChecksumCapabilities::default();
        // The guest's driver may leave TCP checksums to the device (VIRTIO_NET_F_CSUM), so
        // what arrives is not checked; a virtual link does not corrupt.
        checksum.tcp = Checksum::Tx;
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU;
        caps.checksum = checksum;
        caps
    }
}

/// One of the service's TCP sockets and the HTTP exchange on it.
struct Connection {
    handle: SocketHandle,
    /// Request bytes not answered yet.
    inbox: Vec<u8>,
    /// The answer being sent: bytes the socket had no room for yet, from `sent` on.
    outbox: Vec<u8>,
    /// How much of the outbox the socket took.
    sent: usize,
    /// Close once the outbox is sent.
    closing: bool,
    /// When it last moved bytes, in the stack's rounds.
    last_used: u64,
}

/// The metadata service on one network interface's link.
pub struct MmdsStack {
    ip: Ipv4Addr,
    mmds: Mmds,
    iface: Interface,
    link: Link,
    sockets: SocketSet<'static>,
    connections: Vec<Connection>,
    /// Where answers go: the source of the guest's last frame to the service.
    guest_mac: [u8; 6],
    frames: VecDeque<Vec<u8>>,
    epoch: std::time::Instant,
    rounds: u64,
}

impl MmdsStack {
    /// The service for `mmds` at `ip`.
    pub fn new(mmds: Mmds, ip: Ipv4Addr) -> Self {
        let mut link = Link::default();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let epoch = std::time::Instant::now();
        let mut iface = Interface::new(config, &mut link, Instant::from_millis(0));
        // Prefix 0: every guest address is on the link, whatever the guest's own network.
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(ip.into(), 0));
        });
        let mut sockets = SocketSet::new(Vec::new());
        let connections = (0..CONNECTIONS)
            .map(|_| {
                let rx = tcp::SocketBuffer::new(vec![0; MAX_REQUEST * 2]);
                let tx = tcp::SocketBuffer::new(vec![0; TX_BUFFER]);
                let mut socket = tcp::Socket::new(rx, tx);
                socket.set_ack_delay(None);
                socket.set_nagle_enabled(false);
                let _ = socket.listen(PORT);
                Connection {
                    handle: sockets.add(socket),
                    inbox: Vec::new(),
                    outbox: Vec::new(),
                    sent: 0,
                    closing: false,
                    last_used: 0,
                }
            })
            .collect();
        MmdsStack {
            ip,
            mmds,
            iface,
            link,
            sockets,
            connections,
            guest_mac: [0xff; 6],
            frames: VecDeque::new(),
            epoch,
            rounds: 0,
        }
    }

    /// The service's address.
    pub fn address(&self) -> Ipv4Addr {
        self.ip
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    /// Answers an ARP request for the service's address.
    fn arp(&mut self, frame: &[u8]) {
        let arp = &frame[ETH_HLEN..];
        // Ethernet/IPv4, a request.
        if arp[0..8] != [0, 1, 8, 0, 6, 4, 0, 1] {
            return;
        }
        let (sender_mac, sender_ip) = (&arp[8..14], &arp[14..18]);
        let mut reply = Vec::with_capacity(ETH_HLEN + 28);
        reply.extend_from_slice(sender_mac);
        reply.extend_from_slice(&MMDS_MAC);
        reply.extend_from_slice(&ETHERTYPE_ARP);
        reply.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
        reply.extend_from_slice(&MMDS_MAC);
        reply.extend_from_slice(&self.ip.octets());
        reply.extend_from_slice(sender_mac);
        reply.extend_from_slice(sender_ip);
        self.queue(reply);
    }

    fn queue(&mut self, frame: Vec<u8>) {
        if self.frames.len() < MAX_QUEUED {
            self.frames.push_back(frame);
        }
    }

    /// Runs the stack and the HTTP exchanges until neither has more to do.
    fn poll(&mut self) {
        // A poll sends a segment or so per socket: go on while rounds send or serve
        // something, so what one packet from the guest started is sent before returning. The
        // guest's window bounds it.
        for _ in 0..MAX_ROUNDS {
            let sent = self.link.to_guest.len();
            let now = self.now();
            self.iface.poll(now, &mut self.link, &mut self.sockets);
            let served = self.serve();
            if !served && self.link.to_guest.len() == sent {
                break;
            }
        }
        while let Some(packet) = self.link.to_guest.pop_front() {
            let mut frame = Vec::with_capacity(ETH_HLEN + packet.len());
            frame.extend_from_slice(&self.guest_mac);
            frame.extend_from_slice(&MMDS_MAC);
            frame.extend_from_slice(&ETHERTYPE_IPV4);
            frame.extend_from_slice(&packet);
            self.queue(frame);
        }
    }

    /// Reads requests, writes answers, recycles finished sockets. Returns whether anything
    /// changed that the stack should send.
    fn serve(&mut self) -> bool {
        let mut changed = false;
        self.rounds += 1;
        let (sockets, mmds) = (&mut self.sockets, &self.mmds);
        let mut all_busy = true;
        for conn in &mut self.connections {
            let socket = sockets.get_mut::<tcp::Socket>(conn.handle);
            match socket.state() {
                tcp::State::Closed | tcp::State::TimeWait => {
                    // A finished exchange; no TIME-WAIT on a link that does not reorder.
                    conn.listen_again(socket);
                    changed = true;
                }
                tcp::State::Listen => {
                    // A connection it accepts counts as used from then.
                    conn.last_used = self.rounds;
                    all_busy = false;
                }
                _ => {}
            }
            if serve_connection(conn, socket, mmds) {
                conn.last_used = self.rounds;
                changed = true;
            }
        }
        if all_busy {
            // Every socket holds a connection: the one idle longest goes now, so the next
            // connection finds a socket listening and a guest that abandons connections
            // cannot lock itself out.
            if let Some(conn) = self.connections.iter_mut().min_by_key(|c| c.last_used) {
                conn.listen_again(sockets.get_mut::<tcp::Socket>(conn.handle));
                changed = true;
            }
        }
        changed
    }
}

impl Connection {
    /// Drops whatever connection `socket` (this one's) holds, silently, and listens again.
    fn listen_again(&mut self, socket: &mut tcp::Socket) {
        socket.abort();
        let _ = socket.listen(PORT);
        self.inbox.clear();
        self.outbox.clear();
        self.sent = 0;
        self.closing = false;
    }
}

/// Moves one connection's bytes: requests in, answers out, one answer at a time. A request is
/// read and answered only once the previous answer is all in the socket: a guest that sends
/// requests and never reads the answers makes the service hold one answer, and its own
/// unread requests then fill the service's receive window, which stops it.
fn serve_connection(conn: &mut Connection, socket: &mut tcp::Socket, mmds: &Mmds) -> bool {
    let mut changed = false;
    loop {
        if conn.sent < conn.outbox.len() && socket.can_send() {
            if let Ok(n) = socket.send_slice(&conn.outbox[conn.sent..]) {
                conn.sent += n;
                changed |= n > 0;
            }
        }
        if conn.sent < conn.outbox.len() {
            break;
        }
        conn.outbox.clear();
        conn.sent = 0;
        if conn.closing {
            break;
        }
        match guest_http::parse(&conn.inbox) {
            Parsed::Complete(request, used) => {
                conn.inbox.drain(..used);
                let answer = mmds.answer(&request);
                conn.outbox = answer.to_bytes(request.close);
                conn.closing = request.close;
                continue;
            }
            Parsed::Invalid(answer) => {
                conn.outbox = answer.to_bytes(true);
                conn.inbox.clear();
                conn.closing = true;
                continue;
            }
            Parsed::Incomplete => {}
        }
        if !socket.can_recv() {
            break;
        }
        let mut buf = [0u8; 2048];
        match socket.recv_slice(&mut buf) {
            Ok(n) if n > 0 => conn.inbox.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    // The guest closed its side: answer what it asked, then close ours.
    if !socket.may_recv() && socket.may_send() {
        conn.closing = true;
    }
    if conn.closing && conn.outbox.is_empty() && socket.may_send() {
        socket.close();
        changed = true;
    }
    changed
}

/// What the connections hold, in bytes: requests not answered yet and answers not sent.
#[cfg(test)]
impl MmdsStack {
    fn held(&self) -> usize {
        self.connections
            .iter()
            .map(|c| c.inbox.capacity() + c.outbox.capacity())
            .sum()
    }
}

impl FrameService for MmdsStack {
    fn offer(&mut self, frame: &[u8]) -> bool {
        if frame.len() < ETH_HLEN {
            return false;
        }
        let ethertype = [frame[12], frame[13]];
        let ip = self.ip.octets();
        if ethertype == ETHERTYPE_ARP && frame.len() >= ETH_HLEN + 28 {
            // Target protocol address.
            if frame[ETH_HLEN + 24..ETH_HLEN + 28] != ip {
                return false;
            }
            self.arp(frame);
            return true;
        }
        if ethertype == ETHERTYPE_IPV4 && frame.len() >= ETH_HLEN + 20 {
            // Destination address.
            if frame[ETH_HLEN + 16..ETH_HLEN + 20] != ip {
                return false;
            }
            self.guest_mac.copy_from_slice(&frame[6..12]);
            self.link.from_guest.push_back(frame[ETH_HLEN..].to_vec());
            self.poll();
            return true;
        }
        false
    }

    fn next_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        loop {
            let frame = self.frames.pop_front()?;
            if frame.len() <= buf.len() {
                buf[..frame.len()].copy_from_slice(&frame);
                return Some(frame.len());
            }
        }
    }

    fn has_frames(&self) -> bool {
        !self.frames.is_empty()
    }
}

#[cfg(test)]
mod tests;
