//! Running a command through the Linux test guest's agent (`fennec-agent serve`, started by
//! the guest's init when the VM has a vsock device) instead of typing it into the console:
//! the output and exit status come back framed, so nothing on the console can confuse them.
//! The protocol is in `resources/guest/agent/src/main.rs`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Why the agent could not run a command.
pub type Error = String;
type Result<T> = std::result::Result<T, Error>;

/// The guest port the agent listens on.
pub const AGENT_PORT: u32 = 1024;
/// The most output one command may give (a guard against a runaway command).
const MAX_OUTPUT: usize = 64 << 20;

fn failed(what: String) -> Error {
    what
}

/// Connects to the agent through the vsock device's host socket `uds`, trying again while the
/// agent is not listening yet (the guest refuses the connection), until `deadline`.
fn connect(uds: &Path, deadline: Instant) -> Result<UnixStream> {
    loop {
        let attempt = (|| -> std::io::Result<Option<UnixStream>> {
            let mut s = UnixStream::connect(uds)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(format!("CONNECT {AGENT_PORT}\n").as_bytes())?;
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while s.read(&mut byte)? == 1 {
                if byte[0] == b'\n' {
                    return Ok(line.starts_with(b"OK ").then_some(s));
                }
                line.push(byte[0]);
            }
            Ok(None)
        })();
        match attempt {
            Ok(Some(s)) => return Ok(s),
            Ok(None) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Ok(None) => {
                return Err(failed(
                    "the guest's agent never accepted a connection".into(),
                ))
            }
            Err(e) => return Err(failed(format!("cannot reach the guest's agent: {e}"))),
        }
    }
}

/// Runs `command` (one line) in the guest through its agent, within `timeout`: its output
/// (trimmed) and exit status.
pub fn run(uds: &Path, command: &str, timeout: Duration) -> Result<(String, i32)> {
    if command.contains('\n') {
        return Err(failed("a command is one line".into()));
    }
    let deadline = Instant::now() + timeout;
    let mut s = connect(uds, deadline)?;
    let io = |e: std::io::Error| failed(format!("talking to the guest's agent: {e}"));
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.write_all(format!("{command}\n").as_bytes()).map_err(io)?;
    let mut output = Vec::new();
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).map_err(|e| {
            failed(format!(
                "the agent's answer to {command:?} ended early: {e}"
            ))
        })?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if output.len() + len > MAX_OUTPUT {
            return Err(failed(format!(
                "{command:?} printed more than {MAX_OUTPUT} bytes"
            )));
        }
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).map_err(|e| {
            failed(format!(
                "the agent's answer to {command:?} ended early: {e}"
            ))
        })?;
        match (head[0], len) {
            (b'o', _) => output.extend_from_slice(&body),
            (b'x', 4) => {
                let status = i32::from_le_bytes([body[0], body[1], body[2], body[3]]);
                return Ok((String::from_utf8_lossy(&output).trim().to_string(), status));
            }
            (kind, _) => return Err(failed(format!("the agent sent a frame of kind {kind}"))),
        }
    }
}
