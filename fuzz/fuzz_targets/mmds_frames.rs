//! Arbitrary frames from a guest to the metadata service on its link: each input is split
//! into frames (a length byte, then that many bytes), each made ARP or IPv4 to the service's
//! address (so the service takes it) by its first byte. The service must take every one
//! without panicking, and answer with a bounded number of frames, none larger than a frame.
#![no_main]

use fennec_devices::virtio::net::FrameService;
use libfuzzer_sys::fuzz_target;

const SERVICE: [u8; 4] = [169, 254, 169, 254];

fuzz_target!(|data: &[u8]| {
    let mmds = fennec::mmds::Mmds::default();
    let _ = mmds.put(serde_json::json!({"latest": {"meta-data": {"id": "i-1"}}}));
    mmds.set_version(fennec::mmds::MmdsVersion::V2);
    let mut stack = fennec::mmds::MmdsStack::new(mmds, SERVICE.into());
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let (body, next) = tail.split_at(usize::from(len).min(tail.len()));
        rest = next;
        let Some((&kind, body)) = body.split_first() else {
            break;
        };
        let mut frame = vec![0x06, 0x01, 0x23, 0x45, 0x67, 0x01, 2, 0xfc, 0, 0, 0, 9];
        let mut payload = body.to_vec();
        if kind & 1 == 0 {
            frame.extend_from_slice(&[0x08, 0x06]);
            payload.resize(payload.len().max(28), 0);
            payload[24..28].copy_from_slice(&SERVICE);
        } else {
            frame.extend_from_slice(&[0x08, 0x00]);
            payload.resize(payload.len().max(20), 0);
            payload[16..20].copy_from_slice(&SERVICE);
        }
        frame.extend_from_slice(&payload);
        assert!(stack.offer(&frame));
    }
    let mut buf = vec![0u8; 65536];
    let mut answers = 0;
    while let Some(n) = stack.next_frame(&mut buf) {
        assert!(n <= 1514);
        answers += 1;
        assert!(answers <= 1024);
    }
});
