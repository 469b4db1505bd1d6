//! The block device on the event loop: queue notifications (ioeventfd) and activation wake it.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::device::Block;
use crate::virtio::VirtioDevice;

const PROCESS_ACTIVATE: u32 = 0;
const PROCESS_QUEUE: u32 = 1;
const PROCESS_RATE_LIMITER: u32 = 2;

impl MutEventSubscriber for Block {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            PROCESS_ACTIVATE => {
                let _ = self.activate_evt.read();
            }
            PROCESS_QUEUE => {
                let _ = self.queue_events()[0].read();
                self.metrics
                    .notifications
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            // A request waiting for tokens may go now.
            PROCESS_RATE_LIMITER => self.limiter.on_timer(),
            other => {
                log::debug!("virtio-blk: unexpected event {other}");
                return;
            }
        }
        // Before DRIVER_OK (or after a reset) there is no queue to serve: the event is drained
        // and dropped, as the spec lets the device do with early notifications.
        self.process_queue();
    }

    /// Registers both eventfds and the rate limiter's timer for the device's whole life: a
    /// driver may reset and restart the device any number of times, and the handler serves
    /// whatever queue is active then; limits may be set while it runs.
    fn init(&mut self, ops: &mut EventOps) {
        let queue = &self.queue_events()[0];
        for (fd, data) in [
            (self.activate_evt.as_raw_fd(), PROCESS_ACTIVATE),
            (queue.as_raw_fd(), PROCESS_QUEUE),
            (self.limiter.as_raw_fd(), PROCESS_RATE_LIMITER),
        ] {
            if let Err(e) = ops.add(Events::with_data_raw(fd, data, EventSet::IN)) {
                log::error!("virtio-blk: failed to register an event source: {e:?}");
            }
        }
    }
}
