//! On a terminal, `fennec run` puts stdin in raw mode (keys reach the guest without Enter, and
//! only the guest echoes) and restores the terminal however it exits.
//! Runs fennec inside a pseudo-terminal made by util-linux's `script`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Runs `fennec run --kernel pvh.elf --cmdline <cmdline>` in a pty, typing `keys` after a pause;
/// returns (pty transcript, fennec's exit status, stty settings before, after).
fn in_pty(cmdline: &str, keys: &[u8]) -> (String, String, String, String) {
    in_pty_with(
        "'{fennec}' run --kernel '{kernel}' --cmdline '{cmdline}'; echo \"rc=$?\"",
        cmdline,
        keys,
    )
}

/// Like [`in_pty`], with the shell lines that run fennec given as a template.
fn in_pty_with(run: &str, cmdline: &str, keys: &[u8]) -> (String, String, String, String) {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let (before, after) = (dir.path().join("before"), dir.path().join("after"));
    let run = run
        .replace("{fennec}", env!("CARGO_BIN_EXE_fennec"))
        .replace("{kernel}", &tiny("pvh.elf").display().to_string())
        .replace("{cmdline}", cmdline);
    let script = format!(
        "stty -g > '{}'; {run}; stty -g > '{}'",
        before.display(),
        after.display()
    );
    let mut child = Command::new("timeout")
        .args(["30", "script", "-qec", &script, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("util-linux script runs");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(keys).unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    let rc = transcript
        .lines()
        .find_map(|l| l.trim().strip_prefix("rc="))
        .unwrap_or_else(|| panic!("fennec did not finish in the pty:\n{transcript}"))
        .to_string();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    (transcript, rc, read(&before), read(&after))
}

#[test]
fn test_tty_keys_reach_guest_without_enter_and_terminal_restored() {
    let (transcript, rc, before, after) = in_pty("tiny.mode=echo", b"xyzq");
    assert_eq!(rc, "0", "{transcript}");
    let after_ready = transcript.split("TINY ready").nth(1).unwrap_or_default();
    // Exactly one "xyz": the guest's echo; a cooked terminal would echo it too (and hold it
    // until Enter, so "q" would never arrive).
    assert_eq!(after_ready.matches("xyz").count(), 1, "{transcript}");
    assert!(after_ready.contains("TINY bye"), "{transcript}");
    assert_eq!(before, after, "terminal settings not restored");
}

#[test]
fn test_tty_restored_when_guest_halts() {
    let (transcript, rc, before, after) = in_pty("tiny.mode=halt", b"");
    assert_eq!(rc, "3", "{transcript}");
    assert_eq!(before, after, "terminal settings not restored");
}

#[test]
fn test_tty_restored_when_fennec_gets_sigterm() {
    let (transcript, rc, before, after) = in_pty_with(
        "'{fennec}' run --kernel '{kernel}' --cmdline '{cmdline}' < /dev/tty & pid=$!; \
         sleep 1; kill -TERM $pid; wait $pid; echo \"rc=$?\"",
        "tiny.mode=echo",
        b"",
    );
    assert_eq!(rc, "0", "{transcript}");
    assert!(transcript.contains("TINY ready"), "{transcript}");
    assert_eq!(before, after, "terminal settings not restored");
}
