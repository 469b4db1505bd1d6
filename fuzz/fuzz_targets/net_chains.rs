//! Arbitrary guest memory under a virtio-net device's receive and transmit queues (rings at
//! 0/0x1000/0x2000 and 0x4000/0x5000/0x6000, buffers anywhere) with frames waiting on its TAP
//! side. The device must never panic, hang or touch memory outside the guest's.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Bytes 2..8 give up to three waiting frames' lengths.
    let frames: Vec<Vec<u8>> = data
        .get(2..8)
        .unwrap_or_default()
        .chunks(2)
        .map(|c| vec![0xa5; usize::from(u16::from_le_bytes([c[0], c[1]]))])
        .collect();
    let _ = fennec_devices::virtio::net::fuzzing::serve_memory(data, &frames);
});
