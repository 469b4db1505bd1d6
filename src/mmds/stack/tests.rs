//! The metadata service's link, driven by a guest made of a second `smoltcp` stack: every frame
//! between them goes through [`FrameService`] as the network device passes it.

use serde_json::json;

use super::*;
use crate::mmds::MmdsVersion;

const GUEST_MAC: [u8; 6] = [0x02, 0xfc, 0, 0, 0, 9];
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The guest: a TCP client on its own stack.
struct Guest {
    iface: Interface,
    link: Link,
    sockets: SocketSet<'static>,
    next_port: u16,
    clock: i64,
}

impl Guest {
    fn new() -> Self {
        let mut link = Link::default();
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ip),
            &mut link,
            Instant::from_millis(0),
        );
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(GUEST_IP.into(), 0));
        });
        Guest {
            iface,
            link,
            sockets: SocketSet::new(Vec::new()),
            next_port: 40000,
            clock: 0,
        }
    }

    /// Opens a connection to the service.
    fn connect(&mut self) -> SocketHandle {
        let rx = tcp::SocketBuffer::new(vec![0; 256 * 1024]);
        let tx = tcp::SocketBuffer::new(vec![0; 16 * 1024]);
        let mut socket = tcp::Socket::new(rx, tx);
        self.next_port += 1;
        socket
            .connect(self.iface.context(), (SERVICE_IP, 80), self.next_port)
            .unwrap();
        self.sockets.add(socket)
    }

    fn socket(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }
}

/// Moves frames both ways until neither side has anything more to say. Returns how many
/// frames the service took.
fn exchange(stack: &mut MmdsStack, guest: &mut Guest) -> usize {
    let mut taken = 0;
    for _ in 0..1000 {
        guest.clock += 1;
        guest.iface.poll(
            Instant::from_millis(guest.clock),
            &mut guest.link,
            &mut guest.sockets,
        );
        let mut moved = false;
        while let Some(packet) = guest.link.to_guest.pop_front() {
            let mut frame = MMDS_MAC.to_vec();
            frame.extend_from_slice(&GUEST_MAC);
            frame.extend_from_slice(&ETHERTYPE_IPV4);
            frame.extend_from_slice(&packet);
            assert!(stack.offer(&frame), "the service takes what is sent to it");
            taken += 1;
            moved = true;
        }
        let mut buf = vec![0u8; 65536];
        while let Some(n) = stack.next_frame(&mut buf) {
            assert_eq!(buf[..6], GUEST_MAC, "answers go to the guest");
            assert_eq!(buf[6..12], MMDS_MAC);
            guest.link.from_guest.push_back(buf[ETH_HLEN..n].to_vec());
            moved = true;
        }
        if !moved {
            return taken;
        }
    }
    panic!("the exchange never settled");
}

/// Sends `request` on a new connection and returns everything the service sent back before
/// it closed the connection.
fn http(stack: &mut MmdsStack, guest: &mut Guest, request: &str) -> String {
    let h = guest.connect();
    exchange(stack, guest);
    assert!(
        guest.socket(h).may_send(),
        "not connected: {:?}; the service's sockets: {:?}",
        guest.socket(h).state(),
        stack
            .connections
            .iter()
            .map(|c| stack.sockets.get::<tcp::Socket>(c.handle).state())
            .collect::<Vec<_>>()
    );
    guest.socket(h).send_slice(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    for _ in 0..100 {
        exchange(stack, guest);
        let s = guest.socket(h);
        while s.can_recv() {
            let mut buf = [0u8; 4096];
            let n = s.recv_slice(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        if !s.may_recv() {
            s.close();
            exchange(stack, guest);
            guest.sockets.remove(h);
            return String::from_utf8(got).unwrap();
        }
    }
    panic!(
        "the service did not close the connection ({:?}); got {} bytes, ending {:?}",
        guest.socket(h).state(),
        got.len(),
        String::from_utf8_lossy(&got[got.len().saturating_sub(100)..])
    );
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").unwrap().1
}

fn stack(version: MmdsVersion) -> MmdsStack {
    let mmds = Mmds::default();
    mmds.put(json!({"latest": {"meta-data": {"instance-id": "i-42"}}}))
        .unwrap();
    mmds.set_version(version);
    MmdsStack::new(mmds, SERVICE_IP)
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&ETHERTYPE_ARP);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&GUEST_IP.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

#[test]
fn test_mmds_stack_answers_arp_for_its_address_only() {
    let mut s = stack(MmdsVersion::V1);
    assert!(s.offer(&arp_request(SERVICE_IP)));
    let mut buf = [0u8; 128];
    let n = s.next_frame(&mut buf).expect("an ARP reply");
    let reply = &buf[..n];
    assert_eq!(reply[..6], GUEST_MAC);
    assert_eq!(reply[12..14], ETHERTYPE_ARP);
    assert_eq!(reply[ETH_HLEN + 6..ETH_HLEN + 8], [0, 2], "a reply");
    assert_eq!(reply[ETH_HLEN + 8..ETH_HLEN + 14], MMDS_MAC);
    assert_eq!(reply[ETH_HLEN + 14..ETH_HLEN + 18], SERVICE_IP.octets());
    assert_eq!(reply[ETH_HLEN + 24..ETH_HLEN + 28], GUEST_IP.octets());
    assert!(!s.has_frames());

    // Everything else is the TAP's: other addresses, other protocols, runts.
    assert!(!s.offer(&arp_request(Ipv4Addr::new(10, 0, 0, 1))));
    let mut ip_elsewhere = vec![0u8; ETH_HLEN + 40];
    ip_elsewhere[12..14].copy_from_slice(&ETHERTYPE_IPV4);
    ip_elsewhere[ETH_HLEN + 16..ETH_HLEN + 20].copy_from_slice(&[10, 0, 0, 1]);
    assert!(!s.offer(&ip_elsewhere));
    let mut ipv6 = ip_elsewhere.clone();
    ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert!(!s.offer(&ipv6));
    assert!(!s.offer(&[0u8; 10]));
    let mut short_ip = vec![0u8; ETH_HLEN + 10];
    short_ip[12..14].copy_from_slice(&ETHERTYPE_IPV4);
    assert!(!s.offer(&short_ip));
    assert!(!s.has_frames());
}

#[test]
fn test_mmds_stack_v2_session_over_tcp() {
    let mut s = stack(MmdsVersion::V2);
    let mut g = Guest::new();
    let refused = http(
        &mut s,
        &mut g,
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let token = http(
        &mut s,
        &mut g,
        "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n\
         Connection: close\r\n\r\n",
    );
    assert!(token.starts_with("HTTP/1.1 200"), "{token}");
    let token = body(&token).to_string();
    let got = http(
        &mut s,
        &mut g,
        &format!(
            "GET /latest/meta-data/instance-id HTTP/1.1\r\nX-metadata-token: {token}\r\n\
             Connection: close\r\n\r\n"
        ),
    );
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(body(&got), "i-42");
}

#[test]
fn test_mmds_stack_keeps_alive_and_serves_a_document_larger_than_its_buffers() {
    let mut s = stack(MmdsVersion::V1);
    let big = "x".repeat(3 * TX_BUFFER);
    s.mmds.put(json!({"big": big})).unwrap();
    let mut g = Guest::new();
    let two = "GET /big HTTP/1.1\r\n\r\nGET /big HTTP/1.1\r\nConnection: close\r\n\r\n";
    let got = http(&mut s, &mut g, two);
    let answers: Vec<&str> = got.split("HTTP/1.1 200 OK").skip(1).collect();
    assert_eq!(answers.len(), 2, "both requests answered on one connection");
    for a in answers {
        assert!(a.ends_with(&big), "every byte of the document arrived");
    }
}

#[test]
fn test_mmds_stack_holds_one_answer_for_a_guest_that_never_reads() {
    let mut s = stack(MmdsVersion::V1);
    let big = "x".repeat(40 * 1024);
    s.mmds.put(json!({"big": big})).unwrap();
    let mut g = Guest::new();
    let h = g.connect();
    exchange(&mut s, &mut g);
    // Small requests for a large answer, pipelined, and not one answer read: the guest's
    // receive buffer fills, and then the service's send window.
    let request = b"GET /big HTTP/1.1\r\n\r\n";
    let mut sent = 0;
    for _ in 0..200 {
        while g.socket(h).can_send() {
            sent += g.socket(h).send_slice(request).unwrap();
        }
        exchange(&mut s, &mut g);
    }
    // Hundreds of requests, each asking for 40 KiB.
    assert!(sent > 16 * 1024, "the guest sent only {sent} bytes");
    // The service holds one answer and what it has not read, not an answer per request.
    let held = s.held();
    assert!(held < 128 * 1024, "the service holds {held} bytes");
}

#[test]
fn test_mmds_stack_recycles_connections() {
    let mut s = stack(MmdsVersion::V1);
    let mut g = Guest::new();
    // Many more connections than sockets, one after another: finished ones are reused.
    for _ in 0..5 * CONNECTIONS {
        let got = http(
            &mut s,
            &mut g,
            "GET /latest/meta-data/instance-id HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(body(&got), "i-42");
    }
    // Connections the guest opens and abandons do not lock it out.
    for _ in 0..CONNECTIONS + 2 {
        g.connect();
        exchange(&mut s, &mut g);
    }
    let got = http(
        &mut s,
        &mut g,
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(body(&got), "i-42");
}

#[test]
fn test_mmds_stack_bad_request_answered_and_closed() {
    let mut s = stack(MmdsVersion::V1);
    let mut g = Guest::new();
    let got = http(&mut s, &mut g, "\x01\x02 nonsense\r\n\r\n");
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(got.contains("Connection: close"));
}

proptest::proptest! {
    /// Whatever a guest sends to the service's address, ARP or IPv4, the stack takes it
    /// without panicking and answers at most a bounded number of frames.
    #[test]
    fn test_mmds_stack_arbitrary_frames_never_panic(
        frames in proptest::collection::vec(
            (proptest::bool::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..1600)),
            1..16,
        ),
    ) {
        let mut s = stack(MmdsVersion::V2);
        for (arp, body) in frames {
            let mut frame = MMDS_MAC.to_vec();
            frame.extend_from_slice(&GUEST_MAC);
            if arp {
                frame.extend_from_slice(&ETHERTYPE_ARP);
                let mut a = body;
                a.resize(a.len().max(28), 0);
                a[24..28].copy_from_slice(&SERVICE_IP.octets());
                frame.extend_from_slice(&a);
            } else {
                frame.extend_from_slice(&ETHERTYPE_IPV4);
                let mut p = body;
                p.resize(p.len().max(20), 0);
                p[16..20].copy_from_slice(&SERVICE_IP.octets());
                frame.extend_from_slice(&p);
            }
            proptest::prop_assert!(s.offer(&frame));
        }
        let mut buf = vec![0u8; 65536];
        let mut answers = 0;
        while s.next_frame(&mut buf).is_some() {
            answers += 1;
        }
        proptest::prop_assert!(answers <= MAX_QUEUED);
    }
}
