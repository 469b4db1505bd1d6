//! Arbitrary register accesses to the virtio-mmio transport with a block device behind it, over
//! arbitrary guest memory: the first byte times 64 is how much of the input fills guest memory;
//! the rest is accesses (`fennec_devices::virtio::mmio::fuzzing::ACCESS_BYTES` each). The
//! transport and the device must never panic, hang or touch memory outside the guest's.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data
        .first()
        .map_or(0, |b| usize::from(*b) * 64)
        .min(data.len());
    let (memory, accesses) = data.split_at(split);
    let _ = fennec_devices::virtio::mmio::fuzzing::access_registers(accesses, memory);
});
