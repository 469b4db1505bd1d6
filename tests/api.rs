//! The control socket on `/dev/kvm`, driven with curl, with `fennec ctl`, and with raw bytes.
//! The guest is the tiny PVH kernel in `tiny.mode=counter`: it prints `TINY tick N` in a loop
//! (so a test sees whether it runs) and resets when its keyboard sends Ctrl-Alt-Del.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::running::collect;
use common::*;

const COUNTER_ARGS: &str = "tiny.mode=counter counter.delay=2000";
const WAIT: Duration = Duration::from_secs(20);

/// A fennec serving a control socket, its console collected as it comes. Killed (our child, by
/// PID) if a test drops it while it runs.
struct ApiVm {
    child: Child,
    socket: PathBuf,
    console: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl ApiVm {
    /// `fennec run --api-socket DIR/api.sock EXTRA...`, waiting until the socket exists.
    fn spawn(extra: &[&str]) -> ApiVm {
        require_kvm();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_fennec"))
            .args(["-v", "run", "--api-socket"])
            .arg(&socket)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fennec");
        let console = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let vm = ApiVm {
            child,
            socket,
            console,
            stderr,
            _dir: dir,
        };
        vm.wait_for(|| vm.socket.exists(), "the control socket to appear");
        vm
    }

    fn context(&self) -> String {
        let tail = |s: &Mutex<String>| {
            let s = s.lock().unwrap();
            s[s.len().saturating_sub(1500)..].to_string()
        };
        format!(
            "--- console (tail) ---\n{}\n--- stderr (tail) ---\n{}",
            tail(&self.console),
            tail(&self.stderr)
        )
    }

    fn wait_for(&self, mut done: impl FnMut() -> bool, what: &str) {
        let deadline = Instant::now() + WAIT;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The highest tick the guest printed.
    fn ticks(&self) -> u64 {
        self.console
            .lock()
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("TINY tick ")?.trim().parse().ok())
            .max()
            .unwrap_or(0)
    }

    fn wait_ticks_above(&self, n: u64) {
        self.wait_for(|| self.ticks() > n, &format!("tick {}", n + 1));
    }

    /// `curl --unix-socket` with `args`; returns (status, body).
    fn curl(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
            .arg("--unix-socket")
            .arg(&self.socket)
            .args(["-X", method]);
        if let Some(body) = body {
            cmd.args(["-H", "Content-Type: application/json", "-d"])
                .arg(body.to_string());
        }
        let out = cmd
            .arg(format!("http://localhost{path}"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run curl ({e}): apt-get install curl"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// `fennec ctl --api-socket ... ARGS`; returns (exit code, stdout, stderr).
    fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_fennec"))
            .arg("ctl")
            .arg("--api-socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ctl_json(&self, args: &[&str]) -> Value {
        let (code, out, err) = self.ctl(args);
        assert_eq!(code, 0, "fennec ctl {args:?}: {err}\n{}", self.context());
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    fn state(&self) -> String {
        self.ctl_json(&["status"])["state"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits for fennec to exit; its exit code.
    fn wait_exit(&mut self) -> i32 {
        let status = wait_with_timeout(&mut self.child, WAIT);
        assert!(status.is_some(), "fennec did not exit\n{}", self.context());
        // Let the collectors take the last bytes.
        std::thread::sleep(Duration::from_millis(100));
        status.unwrap().code().unwrap_or(-1)
    }
}

impl Drop for ApiVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fault_of(response: &str) -> String {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str::<Value>(body).map_or_else(
        |_| String::new(),
        |v| v["fault_message"].as_str().unwrap_or_default().to_string(),
    )
}

fn boot_source() -> Value {
    json!({
        "kernel_image_path": tiny("pvh.elf"),
        "boot_args": COUNTER_ARGS,
    })
}

#[test]
fn api_lifecycle_with_curl_and_fennec_ctl() {
    let mut vm = ApiVm::spawn(&[]);
    let mode = std::fs::metadata(&vm.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    // Configure with curl, as a Firecracker script would.
    let (code, body) = vm.curl("GET", "/", None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["state"],
        "Not started"
    );
    assert_eq!(vm.curl("PUT", "/boot-source", Some(boot_source())).0, 204);
    let machine = json!({"vcpu_count": 2, "mem_size_mib": 64, "smt": false});
    assert_eq!(vm.curl("PUT", "/machine-config", Some(machine)).0, 204);
    let (code, body) = vm.curl("GET", "/machine-config", None);
    assert_eq!(
        (code, body.contains("\"vcpu_count\":2")),
        (200, true),
        "{body}"
    );

    // Post-boot operations before the start are refused.
    let (code, _, err) = vm.ctl(&["pause"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("400") && err.contains("before starting"),
        "{err}"
    );

    // Start with fennec ctl; starting again and pre-boot changes are refused.
    let (code, _, err) = vm.ctl(&["start"]);
    assert_eq!(code, 0, "{err}\n{}", vm.context());
    let again = json!({"action_type": "InstanceStart"});
    let (code, body) = vm.curl("PUT", "/actions", Some(again));
    assert_eq!(code, 400, "{body}");
    let (code, body) = vm.curl(
        "PUT",
        "/machine-config",
        Some(json!({"vcpu_count": 1, "mem_size_mib": 64})),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("fault_message"), "{body}");
    vm.wait_ticks_above(3);
    assert_eq!(vm.state(), "Running");

    // Pause: the counter stops, for both vCPUs' sake (one never started).
    let (code, _, err) = vm.ctl(&["pause"]);
    assert_eq!(code, 0, "{err}");
    let (_, info) = vm.curl("GET", "/", None);
    assert!(info.contains("\"Paused\""), "{info}");
    let paused_at = vm.ticks();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(vm.ticks(), paused_at, "the guest ran while paused");
    // Pausing again is harmless.
    assert_eq!(vm.ctl(&["pause"]).0, 0);

    // Resume with curl: it continues.
    let resumed = json!({"state": "Resumed"});
    assert_eq!(vm.curl("PATCH", "/vm", Some(resumed)).0, 204);
    vm.wait_ticks_above(paused_at + 3);
    assert_eq!(vm.state(), "Running");

    let metrics = vm.ctl_json(&["metrics"]);
    assert_eq!(metrics["vcpus"].as_array().unwrap().len(), 2, "{metrics}");
    assert!(metrics["serial"]["bytes_out"].as_u64().unwrap() > 0);
    assert!(metrics["vcpus"][0]["io_out"].as_u64().unwrap() > 0);
    // The guest wrote its boot timer: after fennec started, before now.
    let boot_us = metrics["boot_time_us"].as_u64().unwrap_or(0);
    assert!(
        boot_us > 0 && boot_us / 1000 <= metrics["uptime_ms"].as_u64().unwrap() + 60_000,
        "{metrics}"
    );
    let config = vm.ctl_json(&["config"]);
    assert_eq!(config["boot-source"]["boot_args"], COUNTER_ARGS);

    // Ctrl-Alt-Del: the guest resets on it and fennec exits 0, removing its socket.
    let cad = json!({"action_type": "SendCtrlAltDel"});
    assert_eq!(vm.curl("PUT", "/actions", Some(cad)).0, 204);
    assert_eq!(vm.wait_exit(), 0, "{}", vm.context());
    assert!(vm.console.lock().unwrap().contains("TINY ctrl-alt-del"));
    assert!(!vm.socket.exists(), "the socket outlived fennec");
}

#[test]
fn api_firecracker_choices_parse_and_the_unsupported_are_refused_by_name() {
    let vm = ApiVm::spawn(&[]);
    // Before any boot source, every other check still applies.
    let (code, body) = vm.curl(
        "PUT",
        "/machine-config",
        Some(json!({"vcpu_count": 0, "mem_size_mib": 64})),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("vCPU count"), "{body}");
    for (field, value) in [
        ("smt", json!(true)),
        ("track_dirty_pages", json!(true)),
        ("cpu_template", json!("C3")),
        ("huge_pages", json!("2M")),
    ] {
        let mut machine = json!({"vcpu_count": 1, "mem_size_mib": 64});
        machine[field] = value;
        let (code, body) = vm.curl("PUT", "/machine-config", Some(machine));
        assert_eq!(code, 400, "{field}: {body}");
        assert!(
            body.contains(&format!("machine-config: {field}: ")),
            "{body}"
        );
    }
    let image = tempfile::NamedTempFile::new().unwrap();
    let path = image.path().to_str().unwrap();
    for (field, value) in [
        ("io_engine", json!("Async")),
        ("socket", json!("/run/vhost-user.sock")),
    ] {
        let mut drive = json!({"drive_id": "d", "path_on_host": path, "is_root_device": false});
        drive[field] = value;
        let (code, body) = vm.curl("PUT", "/drives/d", Some(drive));
        assert_eq!(code, 400, "{field}: {body}");
        assert!(
            body.contains(&format!("drive \\\"d\\\": {field}: ")),
            "{body}"
        );
    }
    // Firecracker's defaults and the choices fennec makes are taken, and reported back as
    // Firecracker reports them.
    let full = json!({"vcpu_count": 2, "mem_size_mib": 64, "smt": false,
                      "track_dirty_pages": false, "cpu_template": "None", "huge_pages": "None"});
    assert_eq!(vm.curl("PUT", "/machine-config", Some(full)).0, 204);
    let drive = json!({"drive_id": "d", "path_on_host": path, "is_root_device": true,
                       "cache_type": "Writeback", "io_engine": "Sync",
                       "rate_limiter": {"bandwidth": {"size": 1048576, "refill_time": 100}},
                       "partuuid": "0eaa91a0-01"});
    let (code, body) = vm.curl("PUT", "/drives/d", Some(drive));
    assert_eq!(code, 204, "{body}");
    let (code, body) = vm.curl("GET", "/vm/config", None);
    assert_eq!(code, 200, "{body}");
    let config: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        config["machine-config"],
        json!({"vcpu_count": 2, "mem_size_mib": 64, "smt": false,
               "track_dirty_pages": false, "huge_pages": "None"})
    );
    assert_eq!(config["drives"][0]["cache_type"], "Writeback");
    assert_eq!(
        config["drives"][0]["rate_limiter"],
        json!({"bandwidth": {"size": 1048576, "refill_time": 100}})
    );
    assert_eq!(config["drives"][0]["partuuid"], "0eaa91a0-01");
}

#[test]
fn api_stop_works_running_and_paused_and_exits_zero() {
    let kernel = tiny("pvh.elf");
    let args = [
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        COUNTER_ARGS,
    ];
    // Stop a running guest.
    let mut vm = ApiVm::spawn(&args);
    vm.wait_ticks_above(2);
    let answer = vm.ctl_json(&["stop"]);
    assert_eq!(answer["exit"]["kind"], "stopped", "{answer}");
    assert_eq!(vm.wait_exit(), 0, "{}", vm.context());
    assert!(!vm.socket.exists());

    // Stop a paused one.
    let mut vm = ApiVm::spawn(&args);
    vm.wait_ticks_above(2);
    assert_eq!(vm.ctl(&["pause"]).0, 0);
    let answer = vm.ctl_json(&["stop"]);
    assert_eq!(answer["exit"]["kind"], "stopped", "{answer}");
    assert_eq!(vm.wait_exit(), 0, "{}", vm.context());

    // Stop before any start ends the VMM too.
    let mut vm = ApiVm::spawn(&[]);
    assert_eq!(vm.ctl(&["stop"]).0, 0);
    assert_eq!(vm.wait_exit(), 0, "{}", vm.context());
}

#[test]
fn api_shutdown_is_graceful_when_the_guest_obeys_and_forced_when_not() {
    let kernel = tiny("pvh.elf");
    let kernel = kernel.to_str().unwrap();

    // The counter guest resets on Ctrl-Alt-Del: not forced.
    let mut vm = ApiVm::spawn(&["--kernel", kernel, "--cmdline", COUNTER_ARGS]);
    vm.wait_ticks_above(1);
    let answer = vm.ctl_json(&["shutdown", "--timeout", "10"]);
    assert_eq!(answer["forced"], false, "{answer}");
    assert_eq!(answer["exit"]["kind"], "reset", "{answer}");
    assert_eq!(vm.wait_exit(), 0, "{}", vm.context());

    // The echo guest never reads its keyboard: stopped after the timeout, also from a pause.
    let mut vm = ApiVm::spawn(&["--kernel", kernel, "--cmdline", "tiny.mode=echo"]);
    vm.wait_for(
        || vm.console.lock().unwrap().contains("TINY ready"),
        "the echo guest",
    );
    assert_eq!(vm.ctl(&["pause"]).0, 0);
    let started = Instant::now();
    let answer = vm.ctl_json(&["shutdown", "--timeout", "1"]);
    assert_eq!(answer["forced"], true, "{answer}");
    assert_eq!(answer["exit"]["kind"], "stopped", "{answer}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(vm.wait_exit(), 0, "{}", vm.context());
}

#[test]
fn api_shutdown_presses_the_acpi_power_button_when_the_guest_listens() {
    let kernel = tiny("pvh.elf");
    let mut vm = ApiVm::spawn(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        "tiny.mode=acpi tiny.acpi=button",
    ]);
    vm.wait_for(
        || {
            vm.console
                .lock()
                .unwrap()
                .contains("TINY acpi waiting for the power button")
        },
        "the guest to unmask its ACPI event interrupt",
    );
    let answer = vm.ctl_json(&["shutdown", "--timeout", "10"]);
    assert_eq!(answer["forced"], false, "{answer}\n{}", vm.context());
    assert_eq!(answer["exit"]["kind"], "power_off", "{answer}");
    assert_eq!(vm.wait_exit(), 0, "{}", vm.context());
    assert!(
        vm.console
            .lock()
            .unwrap()
            .contains("TINY acpi power button"),
        "{}",
        vm.context()
    );
}

#[test]
fn api_bad_input_gets_4xx_and_the_vm_keeps_running() {
    let kernel = tiny("pvh.elf");
    let vm = ApiVm::spawn(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        COUNTER_ARGS,
    ]);
    vm.wait_ticks_above(1);
    let big = "x".repeat(70 * 1024);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("invalid JSON", request("PATCH", "/vm", "{\"state\": "), 400),
        ("empty body", request("PUT", "/actions", ""), 400),
        (
            "unknown field",
            request("PATCH", "/vm", r#"{"state": "Paused", "when": "now"}"#),
            400,
        ),
        (
            "wrong type",
            request("PATCH", "/vm", r#"{"state": 1}"#),
            400,
        ),
        ("missing field", request("PUT", "/actions", "{}"), 400),
        (
            "unknown action",
            request("PUT", "/actions", r#"{"action_type": "Explode"}"#),
            400,
        ),
        (
            "pre-boot after boot",
            request(
                "PUT",
                "/boot-source",
                &format!(r#"{{"kernel_image_path": "{}"}}"#, kernel.display()),
            ),
            400,
        ),
        (
            "start twice",
            request("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#),
            400,
        ),
        (
            "drive patch of no drive",
            request(
                "PATCH",
                "/drives/nope",
                r#"{"drive_id": "nope", "path_on_host": "/dev/null"}"#,
            ),
            400,
        ),
        (
            "rate limits of no network interface",
            request(
                "PATCH",
                "/network-interfaces/nope",
                r#"{"iface_id": "nope", "tx_rate_limiter": {"ops": {"size": 1, "refill_time": 1}}}"#,
            ),
            400,
        ),
        (
            "rate limits with a field Firecracker does not have",
            request(
                "PATCH",
                "/network-interfaces/nope",
                r#"{"iface_id": "nope", "rate_limiter": {}}"#,
            ),
            400,
        ),
        (
            "a bucket without its refill time",
            request(
                "PATCH",
                "/drives/nope",
                r#"{"drive_id": "nope", "rate_limiter": {"ops": {"size": 1}}}"#,
            ),
            400,
        ),
        ("unknown path", request("GET", "/no/such/path", ""), 404),
        ("unknown method", request("DELETE", "/vm", ""), 405),
        ("Firecracker-only", request("PUT", "/balloon", "{}"), 400),
        (
            "a vsock device without its fields",
            request("PUT", "/vsock", "{}"),
            400,
        ),
        ("oversized body", request("PUT", "/actions", &big), 413),
        (
            "chunked body",
            b"PUT /actions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            411,
        ),
        (
            "not HTTP",
            b"\x16\x03\x01\x02\x00\x01\r\n\r\n".to_vec(),
            400,
        ),
        (
            "too many headers",
            format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(40)).into_bytes(),
            431,
        ),
    ];
    for (what, bytes, expected) in cases {
        let response = raw(&vm.socket, &bytes, WAIT);
        assert_eq!(status_of(&response), expected, "{what}: {response}");
        assert!(!fault_of(&response).is_empty(), "{what}: {response}");
    }

    // A client that sends half a request and vanishes, mid-head and mid-body.
    for partial in [
        &b"GET /sta"[..],
        b"PATCH /vm HTTP/1.1\r\nContent-Length: 50\r\n\r\n{\"st",
    ] {
        let mut s = UnixStream::connect(&vm.socket).unwrap();
        s.write_all(partial).unwrap();
        drop(s);
    }
    // A slow client holding half a request does not hold up anybody else.
    let mut slow = UnixStream::connect(&vm.socket).unwrap();
    slow.write_all(b"GET /status HTTP/1.1\r\n").unwrap();
    let quick = raw(&vm.socket, &request("GET", "/status", ""), WAIT);
    assert_eq!(status_of(&quick), 200, "{quick}");
    drop(slow);
    // A half-closed client still gets its answer.
    let mut s = UnixStream::connect(&vm.socket).unwrap();
    s.write_all(&request("GET", "/", "")).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert_eq!(status_of(&answer), 200, "{answer}");
    // Two pipelined keep-alive requests get two answers, in order.
    let pipelined =
        b"GET /machine-config HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n";
    let both = raw(&vm.socket, pipelined, WAIT);
    assert_eq!(both.matches("HTTP/1.1 200").count(), 2, "{both}");
    assert!(both.find("vcpu_count") < both.find("app_name"), "{both}");

    // The VM is still healthy and the socket still serves.
    let before = vm.ticks();
    vm.wait_ticks_above(before + 2);
    assert_eq!(vm.state(), "Running");
}

#[test]
fn api_socket_path_rules() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let fennec = |socket: &Path| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fennec"))
            .arg("run")
            .arg("--api-socket")
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_with_timeout(&mut child, Duration::from_secs(5));
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status.and_then(|s| s.code()), err)
    };

    // A live socket is refused and left alone.
    let live = dir.path().join("live.sock");
    let _listener = UnixListener::bind(&live).unwrap();
    let (code, err) = fennec(&live);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("in use"), "{err}");
    assert!(live.exists());

    // A path that is not a socket is refused and left alone.
    let file = dir.path().join("file");
    std::fs::write(&file, "keep me").unwrap();
    let (code, err) = fennec(&file);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

    // A stale socket (its process gone) is replaced, and the new one serves.
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let mut vm = Command::new(env!("CARGO_BIN_EXE_fennec"))
        .arg("run")
        .arg("--api-socket")
        .arg(&stale)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let answer = loop {
        let answer = UnixStream::connect(&stale)
            .ok()
            .map(|_| raw(&stale, &request("GET", "/", ""), WAIT));
        if let Some(a) = answer.filter(|a| status_of(a) == 200) {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "the replaced socket never served"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(answer.contains("Not started"), "{answer}");
    let stop = raw(
        &stale,
        &request("PUT", "/actions", r#"{"action_type": "Stop"}"#),
        WAIT,
    );
    assert_eq!(status_of(&stop), 200, "{stop}");
    let status = wait_with_timeout(&mut vm, WAIT);
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert!(!stale.exists(), "the socket outlived fennec");
}

#[test]
fn config_file_boots_the_same_guest_as_the_api() {
    require_kvm();
    let (_disk_dir, disk) = temp_file("disk.img", &pattern(64 * 512, 7));
    let boot_args = "tiny.mode=report";
    let config = json!({
        "boot-source": {"kernel_image_path": tiny("pvh.elf"), "boot_args": boot_args},
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 96, "smt": false},
        "drives": [{"drive_id": "data", "path_on_host": disk, "is_root_device": false,
                    "is_read_only": true, "cache_type": "Unsafe"}],
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vm.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let from_file = fennec(&["run", "--config-file", file.to_str().unwrap()]);
    assert_eq!(from_file.code, Some(0), "{}", from_file.context());
    assert!(from_file.stdout.contains("TINY ready"));

    let mut vm = ApiVm::spawn(&[]);
    assert_eq!(
        vm.curl("PUT", "/boot-source", Some(config["boot-source"].clone()))
            .0,
        204
    );
    assert_eq!(
        vm.curl(
            "PUT",
            "/machine-config",
            Some(config["machine-config"].clone())
        )
        .0,
        204
    );
    assert_eq!(
        vm.curl("PUT", "/drives/data", Some(config["drives"][0].clone()))
            .0,
        204
    );
    let start = json!({"action_type": "InstanceStart"});
    assert_eq!(vm.curl("PUT", "/actions", Some(start)).0, 204);
    assert_eq!(vm.wait_exit(), 0, "{}", vm.context());
    let from_api = vm.console.lock().unwrap().clone();
    assert_eq!(from_api, from_file.stdout);
    assert!(from_api.contains("TINY cpus=2"), "{from_api}");
    assert!(from_api.contains("virtio_mmio.device=4K@"), "{from_api}");
}

#[test]
fn config_file_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vm.json");
    std::fs::write(
        &file,
        r#"{"boot-source": {"kernel_image_path": "/k"}, "machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "smt": true}}"#,
    )
    .unwrap();
    let run = fennec(&["run", "--config-file", file.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "{}", run.context());
    assert!(run.stderr.contains("smt"), "{}", run.context());
    let run = fennec(&["run", "--config-file", "/nonexistent/vm.json"]);
    assert_eq!(run.code, Some(1), "{}", run.context());
    assert!(run.stderr.contains("cannot read"), "{}", run.context());
    let run = fennec(&["run"]);
    assert_eq!(run.code, Some(2), "{}", run.context());
}

/// A FIFO (whose open would wait for a writer) or a character device named as the kernel, the
/// initrd or a drive is refused with a 400 that says what it is, and the control socket goes on
/// answering; the CLI refuses them too.
#[test]
fn api_fifo_or_device_as_kernel_initrd_or_drive_is_refused_without_blocking() {
    let vm = ApiVm::spawn(&[]);
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success(), "mkfifo failed");
    let fifo = fifo.to_str().unwrap();
    let kernel = tiny("pvh.elf");
    let kernel = kernel.to_str().unwrap();
    for (path, kind) in [(fifo, "a FIFO"), ("/dev/null", "a character device")] {
        let (code, body) = vm.curl(
            "PUT",
            "/boot-source",
            Some(json!({"kernel_image_path": path})),
        );
        assert_eq!(code, 400, "kernel {path}: {body}");
        assert!(body.contains(kind), "kernel {path}: {body}");
        let boot = json!({"kernel_image_path": kernel, "initrd_path": path});
        let (code, body) = vm.curl("PUT", "/boot-source", Some(boot));
        assert_eq!(code, 400, "initrd {path}: {body}");
        assert!(body.contains(kind), "initrd {path}: {body}");
    }
    // A drive is checked when the VM is built, at InstanceStart.
    let boot = json!({"kernel_image_path": kernel, "boot_args": "tiny.mode=halt"});
    assert_eq!(vm.curl("PUT", "/boot-source", Some(boot)).0, 204);
    let drive = json!({"drive_id": "d", "path_on_host": fifo, "is_root_device": false});
    assert_eq!(vm.curl("PUT", "/drives/d", Some(drive)).0, 204);
    let start = json!({"action_type": "InstanceStart"});
    let (code, body) = vm.curl("PUT", "/actions", Some(start));
    assert_eq!(code, 400, "{body}\n{}", vm.context());
    assert!(body.contains("is a FIFO"), "{body}");
    let (code, body) = vm.curl("GET", "/", None);
    assert_eq!(code, 200, "the socket still answers: {body}");

    let run = fennec(&["run", "--kernel", fifo]);
    assert_eq!(run.code, Some(1), "{}", run.context());
    assert!(run.stderr.contains("is a FIFO"), "{}", run.context());
    let run = fennec(&["run", "--kernel", kernel, "--disk", &format!("path={fifo}")]);
    assert_eq!(run.code, Some(1), "{}", run.context());
    assert!(run.stderr.contains("is a FIFO"), "{}", run.context());
}
