//! A fennec process running a tiny guest, its console and log collected, killed (by PID, our
//! own child) when dropped.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{require_kvm, tiny, TIMEOUT};

/// A fennec running a tiny guest that waits for console input, with its output collected.
pub struct Running {
    pub child: Child,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
    pub dir: tempfile::TempDir,
    /// The threads reading stdout and stderr, which end at their pipes' ends.
    readers: Vec<JoinHandle<()>>,
}

/// Collects what `pipe` gives into a string as it comes.
pub fn collect(pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    collect_joinable(pipe).0
}

/// [`collect`], and the reading thread, which ends at the pipe's end.
fn collect_joinable(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let reader = std::thread::spawn(move || {
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
    (text, reader)
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
        let (stdout, out_reader) = collect_joinable(child.stdout.take().unwrap());
        let (stderr, err_reader) = collect_joinable(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
            dir,
            readers: vec![out_reader, err_reader],
        }
    }

    /// Waits up to `timeout` for fennec to end (killing it then), and for everything it wrote
    /// to be collected; its status, `None` if it was killed.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let status = super::wait_with_timeout(&mut self.child, timeout);
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status
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
