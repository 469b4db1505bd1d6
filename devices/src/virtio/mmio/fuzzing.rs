//! Drives the virtio-mmio transport, with a block device behind it, through arbitrary register
//! accesses, for the fuzz target (`fuzz/`) and the property tests: whatever a driver writes to
//! whichever register in whatever order and width, the transport must never panic, and the
//! device it activates must serve its queue without leaving guest memory.

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{MmioInterrupt, MmioState, MmioTransport};
use crate::bus::BusDevice;
use crate::virtio::block::fuzzing::scenario;
use crate::virtio::transport::TransportStateError;
use crate::EventFdTrigger;

/// Bytes of one register access in the input: an operation byte (bit 0: write; bits 1-2: the
/// width, 1, 2, 4 or 8 bytes), a 16-bit offset (within the transport's first 0x200 bytes:
/// the registers and the configuration space) and a 32-bit value.
pub const ACCESS_BYTES: usize = 7;

/// Runs the accesses `input` describes against a fresh transport over guest memory whose
/// first bytes are `memory`, serving the device's queue after each queue notification.
/// Returns the final device status register.
pub fn access_registers(input: &[u8], memory: &[u8]) -> u32 {
    let (mem, block) = scenario(memory, false);
    let block = Arc::new(Mutex::new(block));
    let irq = EventFd::new(EFD_NONBLOCK).expect("an eventfd");
    let interrupt = Arc::new(MmioInterrupt::new(EventFdTrigger::new(irq)));
    let mut transport = MmioTransport::new(block.clone(), mem, interrupt);
    for access in input.chunks_exact(ACCESS_BYTES) {
        let write = access[0] & 1 == 1;
        let width = 1usize << ((access[0] >> 1) & 3);
        let offset = u64::from(u16::from_le_bytes([access[1], access[2]]) & 0x1ff);
        let mut data = [0u8; 8];
        data[..4].copy_from_slice(&access[3..7]);
        if write {
            transport.write(offset, &data[..width]);
            if offset == super::reg::QUEUE_NOTIFY {
                block
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .process_queue();
            }
        } else {
            transport.read(offset, &mut data[..width]);
        }
    }
    let mut status = [0u8; 4];
    transport.read(super::reg::STATUS, &mut status);
    u32::from_le_bytes(status)
}

/// Puts `state` (from a state file, so anything) back into a fresh transport with a block
/// device behind it, over guest memory whose first bytes are `memory`, as a restore does; a
/// device it started serves its queue once. Whatever the state says, the transport must refuse
/// it with a reason or take it, and never panic or leave guest memory.
pub fn restore_state(state: &MmioState, memory: &[u8]) -> Result<u32, TransportStateError> {
    let (mem, block) = scenario(memory, false);
    let block = Arc::new(Mutex::new(block));
    let irq = EventFd::new(EFD_NONBLOCK).expect("an eventfd");
    let interrupt = Arc::new(MmioInterrupt::new(EventFdTrigger::new(irq)));
    let mut transport = MmioTransport::new(block.clone(), mem, interrupt);
    transport.restore_mmio(state)?;
    block
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .process_queue();
    let mut status = [0u8; 4];
    transport.read(super::reg::STATUS, &mut status);
    Ok(u32::from_le_bytes(status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::mmio::reg;
    use crate::virtio::status;
    use proptest::prelude::*;

    fn access(write: bool, width_log2: u8, offset: u64, value: u32) -> Vec<u8> {
        let mut a = vec![u8::from(write) | (width_log2 << 1)];
        a.extend_from_slice(&(offset as u16).to_le_bytes());
        a.extend_from_slice(&value.to_le_bytes());
        a
    }

    /// The accesses a well-behaved driver makes, so the property below starts from inputs
    /// that reach an active device.
    fn bring_up() -> Vec<u8> {
        let w = |offset, value| access(true, 2, offset, value);
        [
            w(reg::STATUS, 0),
            w(reg::STATUS, u32::from(status::ACKNOWLEDGE)),
            w(reg::STATUS, u32::from(status::ACKNOWLEDGE | status::DRIVER)),
            w(reg::DRIVER_FEATURES_SEL, 1),
            w(reg::DRIVER_FEATURES, 1),
            w(
                reg::STATUS,
                u32::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK),
            ),
            w(reg::QUEUE_SEL, 0),
            w(reg::QUEUE_NUM, 16),
            w(reg::QUEUE_DESC_LOW, 0),
            w(reg::QUEUE_AVAIL_LOW, 0x1000),
            w(reg::QUEUE_USED_LOW, 0x2000),
            w(reg::QUEUE_READY, 1),
            w(
                reg::STATUS,
                u32::from(
                    status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
                ),
            ),
        ]
        .concat()
    }

    #[test]
    fn test_a_well_behaved_driver_brings_the_device_up() {
        let got = access_registers(&bring_up(), &[]);
        assert_ne!(got & u32::from(status::DRIVER_OK), 0, "status {got:#x}");
    }

    proptest! {
        /// A driver's bring-up followed by arbitrary accesses (notifications among them) over
        /// arbitrary guest memory: no panic, no access outside guest memory.
        #[test]
        fn test_arbitrary_register_accesses_never_panic(
            extra in proptest::collection::vec(any::<u8>(), 0..ACCESS_BYTES * 40),
            memory in proptest::collection::vec(any::<u8>(), 0..0x3000),
        ) {
            let mut input = bring_up();
            input.extend_from_slice(&extra);
            access_registers(&input, &memory);
        }
    }
}
