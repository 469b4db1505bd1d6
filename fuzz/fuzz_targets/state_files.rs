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

/// The state file's header, as fennec writes it (src/snapshot/file.rs).
fn state_file(payload: &[u8]) -> Vec<u8> {
    let mut file = b"FNECSNAP".to_vec();
    file.extend_from_slice(&fennec::snapshot::FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    file.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    file.extend_from_slice(payload);
    file
}

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("fennec-fuzz-state-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("a scratch file in the temporary directory");
    file.write_all(&state_file(data)).expect("written");
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
