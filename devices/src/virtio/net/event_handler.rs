//! The network device on the event loop: activation, the two queue eventfds, and the backend.
//!
//! The backend is watched (level-triggered) for input only while [`Net::wants_backend`] says
//! so: a frame that waits for receive buffers takes it off the loop until the guest posts more,
//! so a readable backend the device cannot serve never spins the loop. It is watched for output
//! only while transmit waits for it (a frame stream whose peer reads slowly).

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::device::Net;
use super::NetMetrics;
use crate::virtio::VirtioDevice;

const PROCESS_ACTIVATE: u32 = 0;
const PROCESS_RX_QUEUE: u32 = 1;
const PROCESS_TX_QUEUE: u32 = 2;
const PROCESS_BACKEND: u32 = 3;
const PROCESS_RX_LIMITER: u32 = 4;
const PROCESS_TX_LIMITER: u32 = 5;

impl Net {
    fn backend_events(&self, set: EventSet) -> Events {
        Events::with_data_raw(self.backend.as_raw_fd(), PROCESS_BACKEND, set)
    }

    /// Starts, changes or stops watching the backend to match what the device can take and
    /// what waits to be written.
    fn watch_backend(&mut self, ops: &mut EventOps) {
        let mut want = EventSet::empty();
        if self.wants_backend() {
            want |= EventSet::IN;
        }
        if self.tx_backend_full && !self.backend_failed {
            want |= EventSet::OUT;
        }
        let want = (!want.is_empty()).then_some(want);
        if want == self.backend_watched {
            return;
        }
        let result = match (self.backend_watched, want) {
            (None, Some(set)) => ops.add(self.backend_events(set)),
            (Some(_), Some(set)) => ops.modify(self.backend_events(set)),
            (Some(old), None) => ops.remove(self.backend_events(old)),
            (None, None) => Ok(()),
        };
        match result {
            Ok(()) => self.backend_watched = want,
            Err(e) => {
                log::error!("virtio-net: failed to change the backend's event registration: {e:?}")
            }
        }
    }

    /// The backend's fd is writable: what waited goes out, then the frames the guest queued.
    pub(super) fn backend_writable(&mut self) {
        match self.backend.flush() {
            Ok(()) if self.backend.wants_write() => {}
            Ok(()) => {
                self.tx_backend_full = false;
                self.process_tx();
            }
            Err(e) => {
                self.tx_backend_full = false;
                self.backend_gone(&format!("writing to it failed ({e})"));
            }
        }
    }
}

impl MutEventSubscriber for Net {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            PROCESS_ACTIVATE => {
                let _ = self.activate_evt.read();
                self.process_tx();
                self.process_rx();
            }
            PROCESS_RX_QUEUE => {
                let _ = self.queue_events()[0].read();
                NetMetrics::add(&self.metrics.rx_notifications, 1);
                self.process_rx();
            }
            PROCESS_TX_QUEUE => {
                let _ = self.queue_events()[1].read();
                NetMetrics::add(&self.metrics.tx_notifications, 1);
                self.process_tx();
            }
            PROCESS_BACKEND => {
                let set = events.event_set();
                let gone = set.intersects(EventSet::ERROR | EventSet::HANG_UP);
                if set.contains(EventSet::IN) || gone {
                    // Read first: a stream's peer may have sent its last frames before hanging
                    // up, and the read's error (or end) says what happened.
                    self.process_rx();
                }
                if set.contains(EventSet::OUT) {
                    self.backend_writable();
                }
                if gone && self.rx_drained && !self.backend_failed {
                    // Nothing to read, yet the fd hangs up: a level-triggered loop would spin.
                    self.backend_gone("its fd reported an error or hang-up");
                }
            }
            // A frame waiting for tokens may go now.
            PROCESS_RX_LIMITER => {
                self.rx_limiter.on_timer();
                self.process_rx();
            }
            PROCESS_TX_LIMITER => {
                self.tx_limiter.on_timer();
                self.process_tx();
            }
            other => log::debug!("virtio-net: unexpected event {other}"),
        }
        self.watch_backend(ops);
    }

    /// Registers the activation and queue eventfds and the rate limiters' timers for the
    /// device's whole life; the TAP joins when the driver activates the device.
    fn init(&mut self, ops: &mut EventOps) {
        let [rx, tx] = [&self.queue_events()[0], &self.queue_events()[1]];
        for (fd, data) in [
            (self.activate_evt.as_raw_fd(), PROCESS_ACTIVATE),
            (rx.as_raw_fd(), PROCESS_RX_QUEUE),
            (tx.as_raw_fd(), PROCESS_TX_QUEUE),
            (self.rx_limiter.as_raw_fd(), PROCESS_RX_LIMITER),
            (self.tx_limiter.as_raw_fd(), PROCESS_TX_LIMITER),
        ] {
            if let Err(e) = ops.add(Events::with_data_raw(fd, data, EventSet::IN)) {
                log::error!("virtio-net: failed to register an event source: {e:?}");
            }
        }
    }
}
