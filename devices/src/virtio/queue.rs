//! Serving a queue the way virtio-queue's docs describe, shared by the devices: notifications
//! off while draining, at most one queue's worth per call, a corrupted available index stops
//! the queue, and the guest is interrupted only when it asked to be.

use std::num::Wrapping;
use std::sync::atomic::Ordering;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

/// What one [`drain`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Chains were returned to the guest.
    pub used_any: bool,
    /// The budget ran out with chains left: call again (after the loop served others).
    pub more: bool,
    /// The driver corrupted the queue (an impossible available index, unreadable rings).
    pub broken: bool,
    /// The guest wants an interrupt for what was used.
    pub notify: bool,
    /// A chain had to wait (its rate limiter had no tokens) and was put back: call again when
    /// the limiter allows.
    pub throttled: bool,
}

/// Whether the driver's available index is one a driver could have written: at most a queue's
/// worth ahead of what the device has taken.
pub fn avail_sane(queue: &Queue, mem: &GuestMemoryMmap) -> bool {
    matches!(queue.avail_idx(mem, Ordering::Acquire),
        Ok(avail) if (avail - Wrapping(queue.next_avail())).0 <= queue.size())
}

/// Serves up to a queue's worth of chains with `serve`, which returns the used length of each.
pub fn drain(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    mut serve: impl FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
) -> Drained {
    drain_bytes(queue, mem, u64::MAX, |chain| (serve(chain), 0))
}

/// [`drain`] with a second budget: `serve` also returns the bytes each chain moved, and the
/// drain stops once `bytes` have moved, so one batch of large requests cannot hold the event
/// loop for long (the rest waits for the next call, after the loop served others).
pub fn drain_bytes(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    bytes: u64,
    mut serve: impl FnMut(DescriptorChain<&GuestMemoryMmap>) -> (u32, u64),
) -> Drained {
    drain_limited(queue, mem, bytes, |chain| Some(serve(chain)))
}

/// [`drain_bytes`] where `serve` may answer `None`: not now. That chain goes back on the queue
/// (it is taken again next time) and the drain stops with [`Drained::throttled`].
pub fn drain_limited(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    mut bytes: u64,
    mut serve: impl FnMut(DescriptorChain<&GuestMemoryMmap>) -> Option<(u32, u64)>,
) -> Drained {
    let mut out = Drained::default();
    let mut budget = queue.size();
    'drain: loop {
        if queue.disable_notification(mem).is_err() {
            out.broken = true;
            break;
        }
        while budget > 0 {
            if !avail_sane(queue, mem) {
                out.broken = true;
                break 'drain;
            }
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let Some((len, moved)) = serve(chain) else {
                queue.go_to_previous_position();
                out.throttled = true;
                break 'drain;
            };
            budget -= 1;
            // Only a head index past the queue fails here: there is nothing to return.
            if queue.add_used(mem, head, len).is_ok() {
                out.used_any = true;
            }
            bytes = bytes.saturating_sub(moved);
            if bytes == 0 {
                budget = 0;
            }
        }
        if budget == 0 {
            out.more = true;
            break;
        }
        match queue.enable_notification(mem) {
            Ok(true) => continue,
            Ok(false) => break,
            Err(_) => {
                out.broken = true;
                break;
            }
        }
    }
    out.notify = out.used_any && queue.needs_notification(mem).unwrap_or(true);
    out
}

/// A ready queue of `size` entries with its rings at `rings` (descriptor table, available
/// ring, used ring), for the fuzzing scenarios, whose guest memory is arbitrary.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzzing_queue(rings: [u64; 3], size: u16, event_idx: bool) -> Queue {
    let mut q = Queue::new(size).expect("a power of two");
    q.set_desc_table_address(Some(rings[0] as u32), Some(0));
    q.set_avail_ring_address(Some(rings[1] as u32), Some(0));
    q.set_used_ring_address(Some(rings[2] as u32), Some(0));
    q.set_event_idx(event_idx);
    q.set_ready(true);
    q
}
