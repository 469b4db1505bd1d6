//! A fennec process running a tiny guest, its console and log collected, killed (by PID, our
//! own child) when dropped.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{require_kvm, tiny, TIMEOUT};

/// A fennec running a tiny guest that waits for console input, with its output collected.
pub struct Running {
    pub child: Child,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
    pub dir: tempfile::TempDir,
}

pub fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

impl Running {
    /// `fennec -v run EXTRA... --kernel pvh.elf` with an echoing guest.
    pub fn start(extra: &[&str], env: &[(&str, &str)]) -> Running {
        let kernel = tiny("pvh.elf");
        let mut args = vec!["run"];
        args.extend(extra);
        args.extend(["--kernel", kernel.to_str().unwrap()]);
        args.extend(["--cmdline", "console=ttyS0 tiny.mode=echo"]);
        Running::spawn(&args, env)
    }

    /// `fennec -v ARGS...`, in a temporary directory of its own.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Running {
        require_kvm();
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(super::linux::fennec_bin());
        cmd.arg("-v")
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn fennec");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
            dir,
        }
    }

    pub fn context(&self) -> String {
        format!(
            "--- console ---\n{}\n--- stderr ---\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    pub fn wait_for_console(&mut self, text: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.stdout.lock().unwrap().contains(text) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "fennec ended ({status}) before {text:?}\n{}",
                    self.context()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} did not appear\n{}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("api.sock")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Our own child, by PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
