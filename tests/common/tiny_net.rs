//! The tiny PVH kernel's network sequence (`resources/tiny/net.c`) from the host's side: its
//! console line by line, the frames it sends and expects, fennec's counters for an interface.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use super::netns::{ethernet, NetNs};
use super::{tiny, KillOnDrop, TIMEOUT};

pub const ETHERTYPE: u16 = 0x88b5;
pub const GUEST_MAC: [u8; 6] = [0x02, 0xfc, 0, 0, 0, 1];
pub const HOST_MAC: [u8; 6] = [0x02, 0xfc, 0, 0, 0, 0xfe];
pub const FRAME_WAIT: Duration = Duration::from_secs(10);

/// The console, line by line, as fennec prints it.
pub struct Console {
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Console {
    pub fn new(child: &mut Child) -> Console {
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Console {
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line starting with `prefix`; returns it.
    pub fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line starting {prefix:?} within {TIMEOUT:?}; console:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

/// `key=value` words of a console line.
pub fn fields(line: &str) -> HashMap<&str, &str> {
    line.split(' ').filter_map(|w| w.split_once('=')).collect()
}

/// The text the guest put in a frame it sent.
pub fn guest_payload(frame: &[u8]) -> String {
    assert_eq!(frame[0..6], [0xff; 6], "broadcast destination");
    assert_eq!(frame[6..12], GUEST_MAC, "the configured MAC as source");
    let text = &frame[14..];
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    String::from_utf8_lossy(&text[..end]).into_owned()
}

pub fn host_frame(text: &str) -> Vec<u8> {
    ethernet(GUEST_MAC, HOST_MAC, ETHERTYPE, text.as_bytes())
}

/// The counters fennec logs for interface `id` when the guest ends (its last line about `id`).
pub fn net_metrics(stderr: &str, id: &str) -> HashMap<String, u64> {
    let prefix = format!("Network interface \"{id}\": ");
    let line = stderr
        .lines()
        .filter_map(|l| l.split_once(&prefix).map(|(_, m)| m.to_string()))
        .next_back()
        .unwrap_or_else(|| panic!("no metrics line for {id}:\n{stderr}"));
    line.split(' ')
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

/// `fennec run` of the tiny kernel's network sequence with `--net <net_arg>`.
pub fn tiny_net_args(net_arg: &str) -> Vec<String> {
    let pvh = tiny("pvh.elf");
    [
        "run",
        "--kernel",
        pvh.to_str().unwrap(),
        "--memory",
        "64",
        "--cmdline",
        "console=ttyS0 tiny.mode=net",
        "--net",
        net_arg,
    ]
    .map(str::to_string)
    .to_vec()
}

/// Starts that with `-v` inside `ns`: the child, its console, and a thread collecting stderr.
pub fn start_tiny_net(
    ns: &NetNs,
    net_arg: &str,
) -> (KillOnDrop, Console, std::thread::JoinHandle<String>) {
    let mut child = ns
        .command(env!("CARGO_BIN_EXE_fennec").as_ref())
        .arg("-v")
        .args(tiny_net_args(net_arg))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fennec");
    let console = Console::new(&mut child);
    let stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    (KillOnDrop(child), console, stderr)
}
