//! Arbitrary guest memory under a vsock device's receive and transmit queues (rings at
//! 0/0x1000/0x2000 and 0x3000/0x4000/0x5000, buffers and the packets in them anywhere), with a
//! host program listening on port 5000. The device must never panic, hang, touch memory
//! outside the guest's or keep more than its bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let _ = fennec_devices::virtio::vsock::fuzzing::serve_memory(data, dir.path());
});
