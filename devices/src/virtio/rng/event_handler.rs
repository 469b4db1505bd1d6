//! The entropy device on the event loop: activation, queue notifications and the rate
//! limiter's timer wake it.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::device::{add, Rng, PROCESS_ACTIVATE, PROCESS_QUEUE, PROCESS_RATE_LIMITER};

impl MutEventSubscriber for Rng {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            PROCESS_ACTIVATE => {
                let _ = self.activate_evt.read();
            }
            PROCESS_QUEUE => {
                let _ = self.queue_events[0].read();
                add(&self.metrics.notifications, 1);
            }
            PROCESS_RATE_LIMITER => self.limiter.on_timer(),
            other => {
                log::debug!("virtio-rng: unexpected event {other}");
                return;
            }
        }
        self.process_queue();
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (fd, data) in [
            (self.activate_evt.as_raw_fd(), PROCESS_ACTIVATE),
            (self.queue_events[0].as_raw_fd(), PROCESS_QUEUE),
            (self.limiter.as_raw_fd(), PROCESS_RATE_LIMITER),
        ] {
            if let Err(e) = ops.add(Events::with_data_raw(fd, data, EventSet::IN)) {
                log::error!("virtio-rng: failed to register an event source: {e:?}");
            }
        }
    }
}
