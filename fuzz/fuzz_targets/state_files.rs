//! Arbitrary state files that pass the format's own checks: a valid header and a checksum
//! that matches, around an arbitrary payload (a crafted file, not a damaged one). Reading it
//! must refuse it with a reason or give a state; a state must pass or fail the restore checks
//! (the machine's shape, and each virtio transport put back over a block device) without a
//! panic, an unbounded allocation or a touch outside guest memory.
#![no_main]

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use fennec_devices::virtio::transport::TransportState;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("fennec-fuzz-state-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("a scratch file in the temporary directory");
    file.write_all(&fennec::snapshot::framed(data))
        .expect("written");
    drop(file);
    let state = fennec::snapshot::read_state(&path);
    let _ = std::fs::remove_file(&path);
    let Ok(state) = state else {
        return;
    };
    let _ = state.check();
    for device in &state.machine.devices.virtio {
        let TransportState::Mmio(mmio) = &device.transport;
        let _ = fennec_devices::virtio::mmio::fuzzing::restore_state(mmio, &[]);
    }
});
