//! Arbitrary guest memory under a virtio-blk request queue: descriptor table at 0, available
//! ring at 0x1000, used ring at 0x2000, buffers anywhere. The device must never panic, hang or
//! touch memory outside the guest's.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let read_only = data.get(1).is_some_and(|b| b & 1 == 1);
    let _ = fennec_devices::virtio::block::fuzzing::serve_memory(data, read_only);
});
