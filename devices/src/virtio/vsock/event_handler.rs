//! The vsock device on the event loop: activation, its three queue eventfds, the listening
//! socket, the timer for handshakes and closes, and every connection's socket. Which sockets
//! are watched, and for what, follows the muxer after each event ([`Vsock::sync`]): a socket
//! is read only when the guest can take its bytes, so a full guest never spins the loop.

use std::os::fd::AsRawFd;
use std::time::Instant;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::defs::add;
use super::device::{Vsock, EVQ, RXQ, TXQ};

const PROCESS_ACTIVATE: u32 = 0;
const PROCESS_RXQ: u32 = 1;
const PROCESS_TXQ: u32 = 2;
const PROCESS_EVQ: u32 = 3;
const PROCESS_LISTENER: u32 = 4;
const PROCESS_TIMER: u32 = 5;
/// A connection's socket: this bit and its descriptor.
const SOCKET: u32 = 1 << 31;

impl Vsock {
    /// Brings the event loop's registrations in line with the muxer, and the timer with its
    /// next deadline.
    fn sync(&mut self, ops: &mut EventOps) {
        let muxer = &mut self.muxer;
        for stream in muxer.closed.drain(..) {
            let fd = stream.as_raw_fd();
            muxer.dirty.remove(&fd);
            if muxer.watched.remove(&fd).is_some() {
                let _ = ops.remove(Events::empty_raw(fd));
            }
        }
        for fd in std::mem::take(&mut muxer.dirty) {
            let want = muxer.interest(fd);
            let have = muxer.watched.get(&fd).copied();
            let events = |set: u32| {
                Events::with_data_raw(fd, SOCKET | fd as u32, EventSet::from_bits_truncate(set))
            };
            let result = match (have, want) {
                (None, Some(set)) => ops.add(events(set)),
                (Some(h), Some(set)) if h != set => ops.modify(events(set)),
                (Some(_), None) => ops.remove(Events::empty_raw(fd)),
                _ => Ok(()),
            };
            if let Err(e) = result {
                log::error!("virtio-vsock: failed to change a socket's event registration: {e:?}");
            }
            match want {
                Some(set) => muxer.watched.insert(fd, set),
                None => muxer.watched.remove(&fd),
            };
        }
        if muxer.deadline != self.armed {
            self.armed = muxer.deadline;
            let result = match self.armed {
                Some(t) => self.timer.reset(
                    t.saturating_duration_since(Instant::now()).max(MIN_TIMER),
                    None,
                ),
                None => self.timer.clear(),
            };
            if let Err(e) = result {
                log::error!("virtio-vsock: failed to set its timer: {e}");
            }
        }
    }
}

/// A timer set for now or the past goes off at once.
const MIN_TIMER: std::time::Duration = std::time::Duration::from_millis(1);

impl MutEventSubscriber for Vsock {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let set = events.event_set();
        match events.data() {
            PROCESS_ACTIVATE => {
                let _ = self.activate_evt.read();
                self.on_activate();
            }
            PROCESS_RXQ => {
                let _ = self.queue_events[RXQ].read();
                add(&self.metrics.notifications, 1);
                self.process_rx();
            }
            PROCESS_TXQ => {
                let _ = self.queue_events[TXQ].read();
                add(&self.metrics.notifications, 1);
                self.process_tx();
            }
            PROCESS_EVQ => {
                let _ = self.queue_events[EVQ].read();
                add(&self.metrics.notifications, 1);
                self.on_event_queue();
            }
            PROCESS_LISTENER => self.muxer.accept(&self.metrics),
            PROCESS_TIMER => {
                let _ = self.timer.wait();
                self.armed = None;
                self.muxer.expire(Instant::now(), &self.metrics);
                self.process_rx();
            }
            data if data & SOCKET != 0 => {
                let fd = (data & !SOCKET) as i32;
                let hung_up = set.intersects(EventSet::HANG_UP | EventSet::ERROR);
                self.muxer.on_socket(
                    fd,
                    set.contains(EventSet::IN),
                    set.contains(EventSet::OUT),
                    hung_up,
                    &self.metrics,
                );
                self.process_rx();
            }
            other => log::debug!("virtio-vsock: unexpected event {other}"),
        }
        self.sync(ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (fd, data) in [
            (self.activate_evt.as_raw_fd(), PROCESS_ACTIVATE),
            (self.queue_events[RXQ].as_raw_fd(), PROCESS_RXQ),
            (self.queue_events[TXQ].as_raw_fd(), PROCESS_TXQ),
            (self.queue_events[EVQ].as_raw_fd(), PROCESS_EVQ),
            (self.muxer.listener_fd(), PROCESS_LISTENER),
            (self.timer.as_raw_fd(), PROCESS_TIMER),
        ] {
            if let Err(e) = ops.add(Events::with_data_raw(fd, data, EventSet::IN)) {
                log::error!("virtio-vsock: failed to register an event source: {e:?}");
            }
        }
    }
}
