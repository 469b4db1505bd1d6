//! Unit tests of the entropy device over mock guest memory.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::rate_limiter::BucketSpec;
use crate::rate_limiter::RateLimiter;
use crate::virtio::mmio::MmioInterrupt;
use crate::virtio::test_utils::{memory, TestRing, WRITE};
use crate::virtio::{features, ActiveQueues, VirtioDevice};
use crate::EventFdTrigger;
use vm_memory::GuestAddress;

const BUFS: u64 = 0x1_0000;

fn active(limiter: RateLimiter) -> (Rng, GuestMemoryMmap, TestRing, EventFd) {
    let mem = memory();
    let ring = TestRing::new(&mem, 0, 16);
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let mut rng = Rng::new(Box::new(getrandom), limiter).unwrap();
    rng.activate(ActiveQueues {
        mem: mem.clone(),
        queues: vec![ring.queue(false)],
        acked_features: features::VERSION_1,
        interrupt: Arc::new(MmioInterrupt::new(EventFdTrigger::new(
            irq.try_clone().unwrap(),
        ))),
    })
    .unwrap();
    (rng, mem, ring, irq)
}

/// The host's random bytes, as safe code reads them.
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

#[test]
fn test_rng_fills_every_buffer_of_a_chain_with_fresh_bytes() {
    let (mut rng, mem, mut ring, irq) = active(RateLimiter::unlimited().unwrap());
    let a = ring.post(&mem, &[(BUFS, 16, WRITE), (BUFS + 0x100, 48, WRITE)]);
    let b = ring.post(&mem, &[(BUFS + 0x200, 64, WRITE)]);
    rng.process_queue();
    assert_eq!(
        ring.take_used(&mem),
        vec![(u32::from(a), 64), (u32::from(b), 64)]
    );
    assert_eq!(irq.read().unwrap(), 1);
    let (first, second) = (read(&mem, BUFS + 0x100, 48), read(&mem, BUFS + 0x200, 48));
    assert_ne!(first, vec![0; 48], "filled");
    assert_ne!(first, second, "two requests get different bytes");
    let m = rng.metrics();
    assert_eq!(m.requests.load(Ordering::Relaxed), 2);
    assert_eq!(m.bytes.load(Ordering::Relaxed), 128);
}

#[test]
fn test_rng_hostile_chains_returned_unused_and_device_keeps_serving() {
    let (mut rng, mem, mut ring, _irq) = active(RateLimiter::unlimited().unwrap());
    ring.post(&mem, &[(BUFS, 64, 0)]);
    ring.post(&mem, &[(0xffff_0000, 64, WRITE)]);
    let big = ring.post(&mem, &[(BUFS, 0x8_0000, WRITE)]);
    let good = ring.post(&mem, &[(BUFS, 32, WRITE)]);
    rng.process_queue();
    let used = ring.take_used(&mem);
    assert_eq!(used.len(), 4);
    assert_eq!(used[0].1, 0);
    assert_eq!(used[1].1, 0);
    assert_eq!(used[2], (u32::from(big), MAX_REQUEST), "capped");
    assert_eq!(used[3], (u32::from(good), 32));
    assert_eq!(rng.metrics().bad_chains.load(Ordering::Relaxed), 2);

    ring.set_avail_idx(&mem, 1000);
    rng.process_queue();
    assert!(rng.broken, "a corrupt queue stops the device");
    rng.reset();
    assert!(!rng.broken);
}

#[test]
fn test_rng_rate_limited_request_waits_on_the_queue() {
    // 100 bytes, refilled over an hour: the second request waits.
    let limiter = RateLimiter::new(
        Some(BucketSpec {
            size: 100,
            one_time_burst: 0,
            refill_ms: 3_600_000,
        }),
        None,
    )
    .unwrap();
    let (mut rng, mem, mut ring, _irq) = active(limiter);
    ring.post(&mem, &[(BUFS, 64, WRITE)]);
    ring.post(&mem, &[(BUFS + 0x100, 64, WRITE)]);
    rng.process_queue();
    assert_eq!(ring.take_used(&mem).len(), 1);
    assert_eq!(rng.metrics().rate_limited.load(Ordering::Relaxed), 1);
    // Lifted limits apply from the limiter's next timer, which the event loop then serves.
    rng.set_rate_limits(Some((None, None)));
    rng.limiter.on_timer();
    rng.process_queue();
    assert_eq!(ring.take_used(&mem).len(), 1, "then the request is served");
}
