//! The network device on the event loop: activation, the two queue eventfds, and the TAP.
//!
//! The TAP is watched (level-triggered) only while [`Net::wants_backend`] says so: a frame that
//! waits for receive buffers takes the TAP off the loop until the guest posts more, so a
//! readable TAP the device cannot serve never spins the loop.

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
    fn backend_events(&self) -> Events {
        Events::with_data_raw(self.backend.as_raw_fd(), PROCESS_BACKEND, EventSet::IN)
    }

    /// Starts or stops watching the backend to match what the device can take.
    fn watch_backend(&mut self, ops: &mut EventOps) {
        let want = self.wants_backend();
        if want == self.backend_watched {
            return;
        }
        let result = if want {
            ops.add(self.backend_events())
        } else {
            ops.remove(self.backend_events())
        };
        match result {
            Ok(()) => self.backend_watched = want,
            Err(e) => {
                log::error!("virtio-net: failed to change the TAP's event registration: {e:?}")
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
                if events
                    .event_set()
                    .intersects(EventSet::ERROR | EventSet::HANG_UP)
                {
                    log::warn!(
                        "virtio-net: the TAP failed (removed?); the guest receives nothing more"
                    );
                    self.backend_failed = true;
                } else {
                    self.process_rx();
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
