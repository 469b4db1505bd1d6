//! The control socket's connection limit: clients that connect and say nothing hold a slot
//! only until the idle timeout, a 33rd connection is turned away with a 503, and every slot
//! comes back when its connection ends.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;

/// Connections served at once (the server's `MAX_CONNECTIONS`).
const MAX_CONNECTIONS: usize = 32;
/// The server's idle timeout, and room for a loaded machine.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const MARGIN: Duration = Duration::from_secs(10);

#[test]
fn api_idle_connections_are_closed_turned_away_past_the_limit_and_give_their_slots_back() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let _vmm = KillOnDrop(spawn_api(&[], &socket));

    // Every slot taken by a client that says nothing.
    let idle: Vec<UnixStream> = (0..MAX_CONNECTIONS)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    // The server has taken them all once a request on a further connection gets the 503.
    let deadline = Instant::now() + MARGIN;
    loop {
        let response = raw(&socket, &request("GET", "/", ""), Duration::from_secs(5));
        if status_of(&response) == 503 {
            assert!(response.contains("Too many connections"), "{response}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 503 with every slot taken: {response}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The idle ones are closed by the server within its idle timeout.
    let started = Instant::now();
    for mut stream in idle {
        stream
            .set_read_timeout(Some(IDLE_TIMEOUT + MARGIN))
            .unwrap();
        let mut buf = Vec::new();
        let read = stream.read_to_end(&mut buf);
        assert!(
            read.is_ok() && started.elapsed() < IDLE_TIMEOUT + MARGIN,
            "an idle connection was still open after {:?}: {read:?}",
            started.elapsed()
        );
    }

    // And their slots are back: requests are served again.
    let deadline = Instant::now() + MARGIN;
    loop {
        let (code, body) = api_call(&socket, "GET", "/", "");
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slots not given back: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Our fennec child, killed (by PID) when the test ends, also when it fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
