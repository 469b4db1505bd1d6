use super::*;

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// A virtio header with `flags`, `gso_type`, `gso_size`, `csum_start`, `csum_offset`.
fn vnet(flags: u8, gso_type: u8, gso_size: u16, start: u16, offset: u16) -> Vec<u8> {
    let mut h = vec![0u8; VNET_HDR_LEN];
    h[0] = flags;
    h[1] = gso_type;
    h[4..6].copy_from_slice(&gso_size.to_le_bytes());
    h[6..8].copy_from_slice(&start.to_le_bytes());
    h[8..10].copy_from_slice(&offset.to_le_bytes());
    h
}

fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = MAC_B.to_vec();
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// A TCP/IPv4 frame as a driver hands it for segmentation: one header, `payload` after it.
fn tcp4(payload: &[u8], flags: u8) -> Vec<u8> {
    let mut f = eth(ETHERTYPE_IPV4);
    let total = (20 + 20 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, IPPROTO_TCP, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    tcp_header(&mut f, flags);
    f.extend_from_slice(payload);
    f
}

fn tcp6(payload: &[u8], flags: u8) -> Vec<u8> {
    let mut f = eth(ETHERTYPE_IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[IPPROTO_TCP, 64]);
    f.extend_from_slice(&[0xfd; 16]);
    f.extend_from_slice(&[0xfe; 16]);
    tcp_header(&mut f, flags);
    f.extend_from_slice(payload);
    f
}

fn tcp_header(f: &mut Vec<u8>, flags: u8) {
    f.extend_from_slice(&1234u16.to_be_bytes());
    f.extend_from_slice(&80u16.to_be_bytes());
    f.extend_from_slice(&0xffff_ff00u32.to_be_bytes()); // wraps within the frame
    f.extend_from_slice(&7u32.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0x10, 0, 0xde, 0xad, 0, 0]);
}

fn run(hdr: Vec<u8>, frame: &[u8]) -> Result<Vec<Vec<u8>>, OffloadError> {
    let mut input = hdr;
    input.extend_from_slice(frame);
    let mut out = Vec::new();
    finish(&input, &mut Vec::new(), |f| out.push(f.to_vec()))?;
    Ok(out)
}

/// Whether the ones' complement sum over `data` (plus `pseudo`) checks out.
fn sums_to_ones(data: &[u8], pseudo: u64) -> bool {
    fold(sum_words(data, pseudo)) == 0xffff
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn test_plain_frame_passes_untouched() {
    let frame = tcp4(b"hello", TCP_PSH);
    let out = run(vnet(0, 0, 0, 0, 0), &frame).unwrap();
    assert_eq!(out, vec![frame]);
}

#[test]
fn test_partial_checksum_is_completed_and_verifies() {
    // A UDP/IPv4 datagram whose checksum field holds the pseudo-header's sum, as Linux leaves it.
    let mut f = eth(ETHERTYPE_IPV4);
    f.extend_from_slice(&[
        0x45, 0, 0, 33, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ]);
    let udp_len = 13u16;
    f.extend_from_slice(&5000u16.to_be_bytes());
    f.extend_from_slice(&53u16.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    let pseudo = sum_words(&f[26..34], 0) + 17 + u64::from(udp_len);
    f.extend_from_slice(&fold(pseudo).to_be_bytes());
    f.extend_from_slice(b"query");
    let out = run(vnet(F_NEEDS_CSUM, 0, 0, 34, 6), &f).unwrap();
    assert_eq!(out.len(), 1);
    let udp = &out[0][34..];
    assert!(sums_to_ones(udp, pseudo), "UDP checksum verifies");
    assert_ne!(&udp[6..8], &[0, 0], "a zero checksum means none in UDP");
    assert_eq!(
        &out[0][..34],
        &f[..34],
        "the headers before it are untouched"
    );
}

fn check_segments(out: &[Vec<u8>], ipv6: bool, data: &[u8], mss: usize, flags: u8) {
    let (ip, tcp) = if ipv6 { (14, 54) } else { (14, 34) };
    assert_eq!(out.len(), data.len().div_ceil(mss), "segment count");
    let mut joined = Vec::new();
    for (i, seg) in out.iter().enumerate() {
        let body = &seg[tcp + 20..];
        assert!(body.len() <= mss, "segment {i} is {} bytes", body.len());
        joined.extend_from_slice(body);
        let tcp_len = seg.len() - tcp;
        let pseudo = if ipv6 {
            assert_eq!(be16(seg, ip + 4) as usize, tcp_len, "IPv6 payload length");
            sum_words(&seg[ip + 8..ip + 40], 0) + tcp_len as u64 + 6
        } else {
            assert_eq!(
                be16(seg, ip + 2) as usize,
                seg.len() - ip,
                "IPv4 total length"
            );
            assert_eq!(
                be16(seg, ip + 4),
                0x1234u16.wrapping_add(i as u16),
                "IPv4 ID"
            );
            assert!(
                sums_to_ones(&seg[ip..tcp], 0),
                "IPv4 header checksum of {i}"
            );
            sum_words(&seg[ip + 12..ip + 20], 0) + tcp_len as u64 + 6
        };
        assert!(sums_to_ones(&seg[tcp..], pseudo), "TCP checksum of {i}");
        let seq = u32::from_be_bytes(seg[tcp + 4..tcp + 8].try_into().unwrap());
        assert_eq!(
            seq,
            0xffff_ff00u32.wrapping_add((i * mss) as u32),
            "sequence of {i}"
        );
        let last = i + 1 == out.len();
        let f = seg[tcp + 13];
        assert_eq!(
            f & (TCP_FIN | TCP_PSH),
            if last { flags & (TCP_FIN | TCP_PSH) } else { 0 }
        );
        assert_eq!(f & TCP_CWR, if i == 0 { flags & TCP_CWR } else { 0 });
        assert_eq!(f & 0x10, 0x10, "ACK stays on every segment");
    }
    assert_eq!(joined, data, "the payload, in order, once");
}

#[test]
fn test_tcp4_frame_is_cut_into_checksummed_segments() {
    let data = payload(4000);
    let flags = 0x10 | TCP_PSH | TCP_FIN | TCP_CWR;
    let out = run(
        vnet(F_NEEDS_CSUM, GSO_TCPV4, 1448, 34, 16),
        &tcp4(&data, flags),
    )
    .unwrap();
    check_segments(&out, false, &data, 1448, flags);
}

#[test]
fn test_tcp6_frame_is_cut_into_checksummed_segments() {
    let data = payload(65000);
    let flags = 0x10 | TCP_PSH;
    let out = run(
        vnet(F_NEEDS_CSUM, GSO_TCPV6 | GSO_ECN, 1428, 54, 16),
        &tcp6(&data, flags),
    )
    .unwrap();
    check_segments(&out, true, &data, 1428, flags);
}

#[test]
fn test_hostile_headers_are_refused_not_followed() {
    let frame = tcp4(&payload(100), 0x10);
    let outside = run(vnet(F_NEEDS_CSUM, 0, 0, 200, 16), &frame).unwrap_err();
    assert!(
        matches!(outside, OffloadError::ChecksumOutside { .. }),
        "{outside}"
    );
    let edge = run(vnet(F_NEEDS_CSUM, 0, 0, 34, 0xffff), &frame).unwrap_err();
    assert!(
        matches!(edge, OffloadError::ChecksumOutside { .. }),
        "{edge}"
    );
    assert_eq!(
        run(vnet(0, GSO_TCPV4, 0, 0, 0), &frame),
        Err(OffloadError::SegmentSize(0))
    );
    let big = tcp4(&payload(65000), 0x10);
    assert_eq!(
        run(vnet(0, GSO_TCPV4, 8, 0, 0), &big),
        Err(OffloadError::SegmentSize(8))
    );
    assert_eq!(
        run(vnet(0, 3, 1000, 0, 0), &frame),
        Err(OffloadError::GsoType(3))
    );
    // Not TCP: ARP, a UDP protocol byte, a header length past the frame, a truncated frame.
    assert_eq!(
        run(vnet(0, GSO_TCPV4, 1000, 0, 0), &eth(0x0806)),
        Err(OffloadError::NotTcp)
    );
    let mut udp = frame.clone();
    udp[23] = 17;
    assert_eq!(
        run(vnet(0, GSO_TCPV4, 1000, 0, 0), &udp),
        Err(OffloadError::NotTcp)
    );
    let mut long_ihl = frame.clone();
    long_ihl[14] = 0x4f;
    long_ihl.truncate(60);
    assert_eq!(
        run(vnet(0, GSO_TCPV4, 1000, 0, 0), &long_ihl),
        Err(OffloadError::NotTcp)
    );
    assert_eq!(
        run(vnet(0, 0, 0, 0, 0), &frame[..10]),
        Err(OffloadError::Short)
    );
}

#[test]
fn test_arbitrary_bytes_never_panic() {
    // A small generator is enough to walk every length check with random offsets.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let base = tcp4(&payload(3000), 0x19);
    for _ in 0..20_000 {
        let r = next();
        let mut input = vnet(
            r as u8 & 1,
            [0, 1, 4, 3, 0x81][(r >> 8) as usize % 5],
            (r >> 16) as u16 % 2000,
            (r >> 32) as u16 % 120,
            (r >> 48) as u16 % 40,
        );
        let len = (next() % base.len() as u64) as usize;
        input.extend_from_slice(&base[..len]);
        for _ in 0..(next() % 4) {
            let at = (next() % input.len() as u64) as usize;
            input[at] = next() as u8;
        }
        let mut count = 0;
        let _ = finish(&input, &mut Vec::new(), |_| count += 1);
        assert!(count <= MAX_SEGMENTS);
    }
}
