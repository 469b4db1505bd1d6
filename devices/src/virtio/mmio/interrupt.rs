//! The transport's interrupt: the InterruptStatus register's bits and the one line it raises.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::virtio::{interrupt, InterruptKind, VirtioInterrupt};
use crate::{EventFdTrigger, Trigger};

/// The MMIO transport's interrupt: one line, and the InterruptStatus register that tells the
/// driver why it was raised (used buffers in some queue, a configuration change). Shared by the
/// device (which raises it) and the transport (which lets the driver read and acknowledge it).
#[derive(Debug)]
pub struct MmioInterrupt {
    pub(super) status: AtomicU32,
    trigger: EventFdTrigger,
}

impl MmioInterrupt {
    /// An interrupt raised through `trigger` (an irqfd's eventfd).
    pub fn new(trigger: EventFdTrigger) -> Self {
        MmioInterrupt {
            status: AtomicU32::new(0),
            trigger,
        }
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Clears the bits the driver acknowledged.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    pub(super) fn signal(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::SeqCst);
        if let Err(e) = self.trigger.trigger() {
            log::warn!("Failed to raise a virtio interrupt: {e}");
        }
    }

    pub(super) fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}

impl VirtioInterrupt for MmioInterrupt {
    /// Every queue shares the one line: the driver learns from InterruptStatus whether it was
    /// used buffers or the configuration.
    fn trigger(&self, kind: InterruptKind) {
        self.signal(match kind {
            InterruptKind::Queue(_) => interrupt::USED_BUFFER,
            InterruptKind::Config => interrupt::CONFIG_CHANGE,
        });
    }
}
