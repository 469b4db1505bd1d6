//! fennec as a drop-in for the `firecracker` binary: started through a symlink of that name
//! with Firecracker's flags, driven by the requests Firecracker's SDKs send.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::running::collect;
use common::{api_call, request, require_kvm, tiny, wait_for_socket, wait_with_timeout, TIMEOUT};

/// A directory with a symlink `firecracker` to the fennec binary.
fn firecracker_link() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("firecracker");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fennec"), &link).unwrap();
    (dir, link)
}

/// `firecracker --api-sock SOCKET EXTRA...` without stdio, once its socket is there.
fn spawn_fc(link: &Path, socket: &Path, extra: &[&str]) -> Child {
    let mut child = Command::new(link)
        .arg("--api-sock")
        .arg(socket)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_socket(&mut child, socket, String::new);
    child
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// `firecracker ARGS`: its exit status, stdout and stderr.
fn firecracker(args: &[&str]) -> (Option<i32>, String, String) {
    let (_dir, link) = firecracker_link();
    let out = Command::new(&link)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn firecracker_flags_errors_and_exit_statuses_are_firecrackers() {
    for (args, status, says) in [
        (
            &["--api-socket", "/tmp/x"][..],
            153,
            "Found argument 'api-socket' which wasn't expected",
        ),
        (
            &["--no-api"][..],
            153,
            "Argument 'config-file' required, but not found.",
        ),
        (
            &["--id"][..],
            153,
            "The argument 'id' requires a value, but none was supplied.",
        ),
        (
            &["--boot-timer", "--boot-timer"][..],
            153,
            "was provided more than once",
        ),
        (
            &["--api-sock=/tmp/x"][..],
            153,
            "Found argument 'api-sock=/tmp/x'",
        ),
        (
            &["--no-seccomp", "--seccomp-filter", "f"][..],
            153,
            "cannot be used together",
        ),
        (
            &["--level", "Loud"][..],
            152,
            "Invalid value for logger level: Loud",
        ),
        (&["--id", "no_underscores"][..], 152, "Invalid instance ID"),
        (
            &["--http-api-max-payload-size", "lots"][..],
            152,
            "expected to be of 'usize' type",
        ),
        (
            &["--mmds-size-limit", "-1"][..],
            152,
            "'mmds-size-limit' parameter expected to be of 'usize' type",
        ),
        (
            &["--seccomp-filter", "/tmp/f.bpf"][..],
            1,
            "--seccomp-filter is not supported",
        ),
        (
            &["--metadata", "/nonexistent/m.json"][..],
            1,
            "cannot read the metadata",
        ),
        (
            &["--log-path", "/nonexistent/log"][..],
            1,
            "Could not initialize logger",
        ),
    ] {
        let (code, _, stderr) = firecracker(args);
        assert_eq!(code, Some(status), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        if status == 153 {
            assert!(
                stderr.contains("For more information try --help."),
                "{stderr}"
            );
        }
    }
    // fennec's snapshot format, and a file that is not a snapshot.
    let (code, stdout, _) = firecracker(&["--snapshot-version"]);
    let version = format!("v{}.0.0", fennec::snapshot::FORMAT_VERSION);
    assert_eq!((code, stdout.trim()), (Some(0), version.as_str()));
    let (code, _, stderr) = firecracker(&["--describe-snapshot", "/etc/hostname"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not a fennec snapshot"), "{stderr}");
    let (code, stdout, _) = firecracker(&["--id", "x", "--version"]);
    assert_eq!(
        (code, stdout.as_str()),
        (Some(0), "Firecracker v1.12.0\n\n")
    );
    let (code, stdout, _) = firecracker(&["--nonsense", "--help"]);
    assert_eq!(code, Some(0));
    for flag in [
        "--api-sock <api-sock>",
        "--no-api",
        "--metrics-path <metrics-path>",
        "--boot-timer",
    ] {
        assert!(stdout.contains(flag), "{flag} missing from:\n{stdout}");
    }
    // `fennec firecracker` is the same.
    let out = Command::new(env!("CARGO_BIN_EXE_fennec"))
        .args(["firecracker", "--version"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Firecracker v1.12.0\n\n"
    );
}

/// Started as firecracker-python starts Firecracker (`--api-sock S --id ID --log-path FILE`),
/// then driven with the requests Firecracker's Go SDK sends for a boot: machine, boot source,
/// start, then pause, resume, and Ctrl-Alt-Del to end it.
#[test]
fn firecracker_symlink_boots_pauses_resumes_and_stops_as_the_sdks_drive_it() {
    require_kvm();
    let (dir, link) = firecracker_link();
    let socket = dir.path().join("fc.sock");
    let log = dir.path().join("fc.log");
    std::fs::write(&log, b"").unwrap();
    // Made by PUT /metrics (mode 0600), as Firecracker does.
    let metrics = dir.path().join("fc.metrics");
    let mut child = Command::new(&link)
        .args([
            "--api-sock",
            socket.to_str().unwrap(),
            "--id",
            "sdk-vm",
            "--log-path",
        ])
        .arg(&log)
        .args(["--level", "Info"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let console = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    wait_for_socket(&mut child, &socket, || stderr.lock().unwrap().clone());
    let call = |method: &str, path: &str, body: serde_json::Value| {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        api_call(&socket, method, path, &body)
    };
    let kernel = tiny("pvh.elf");
    for (method, path, body, want) in [
        ("GET", "/", serde_json::Value::Null, 200),
        ("GET", "/version", serde_json::Value::Null, 200),
        (
            "PUT",
            "/machine-config",
            serde_json::json!({"vcpu_count": 1, "mem_size_mib": 128, "smt": false}),
            204,
        ),
        (
            "PUT",
            "/boot-source",
            serde_json::json!({"kernel_image_path": kernel,
                               "boot_args": "console=ttyS0 tiny.mode=counter counter.delay=200000"}),
            204,
        ),
        // Nothing to flush yet; then the metrics file, once.
        (
            "PUT",
            "/actions",
            serde_json::json!({"action_type": "FlushMetrics"}),
            400,
        ),
        (
            "PUT",
            "/metrics",
            serde_json::json!({"metrics_path": metrics}),
            204,
        ),
        (
            "PUT",
            "/metrics",
            serde_json::json!({"metrics_path": metrics}),
            400,
        ),
        (
            "PUT",
            "/actions",
            serde_json::json!({"action_type": "InstanceStart"}),
            204,
        ),
        ("PATCH", "/vm", serde_json::json!({"state": "Paused"}), 204),
        ("PATCH", "/vm", serde_json::json!({"state": "Resumed"}), 204),
        (
            "PUT",
            "/actions",
            serde_json::json!({"action_type": "FlushMetrics"}),
            204,
        ),
        // Pre-boot only, as in Firecracker.
        ("PUT", "/logger", serde_json::json!({"level": "Debug"}), 400),
    ] {
        let (status, answer) = call(method, path, body);
        assert_eq!(status, want, "{method} {path}: {answer}");
        if path == "/version" {
            assert_eq!(answer["firecracker_version"], "1.12.0", "{answer}");
        }
        if path == "/" {
            assert_eq!(answer["id"], "sdk-vm", "{answer}");
        }
    }
    let (_, info) = call("GET", "/", serde_json::Value::Null);
    assert_eq!(info["state"], "Running", "{info}");
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !console.lock().unwrap().contains("TINY tick 2") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            console.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, answer) = call(
        "PUT",
        "/actions",
        serde_json::json!({"action_type": "SendCtrlAltDel"}),
    );
    assert_eq!(status, 204, "{answer}");
    let status = wait_with_timeout(&mut child, TIMEOUT).expect("fennec ends after Ctrl-Alt-Del");
    assert!(status.success(), "{status}: {}", stderr.lock().unwrap());
    assert!(console.lock().unwrap().contains("TINY ctrl-alt-del"));
    // The log went to --log-path, as Firecracker writes it: `TIMESTAMP [ID:THREAD] MESSAGE`.
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("[sdk-vm:main] Running as Firecracker v1.12.0"),
        "{log}"
    );
    assert!(log.contains("[sdk-vm:"), "{log}");
    assert!(!stderr.lock().unwrap().contains("Running as Firecracker"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&metrics).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the metrics file PUT /metrics made");
    }
    // A line at the start, one flushed, one at the end.
    let lines = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(lines.lines().count(), 3, "{lines}");
    // Firecracker's schema: a drive-less VM still has the `block` group; the vCPU's port
    // writes (its console output) are counted once, in the line after them.
    // The control socket's requests are counted as Firecracker counts them.
    let (mut io_out, mut boot_source, mut metrics_fails, mut paused_us) = (0, 0, 0, 0);
    for line in lines.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(m["block"]["read_count"].is_u64(), "{line}");
        assert!(m.get("uptime_ms").is_none(), "fennec's own shape: {line}");
        io_out += m["vcpu"]["exit_io_out"].as_u64().unwrap();
        boot_source += m["put_api_requests"]["boot_source_count"].as_u64().unwrap();
        metrics_fails += m["put_api_requests"]["metrics_fails"].as_u64().unwrap();
        paused_us = paused_us.max(m["latencies_us"]["pause_vm"].as_u64().unwrap());
    }
    assert!(paused_us > 0, "the pause's duration: {lines}");
    assert!(io_out > 0, "{lines}");
    assert_eq!(boot_source, 1, "one PUT /boot-source: {lines}");
    assert_eq!(metrics_fails, 1, "the second PUT /metrics: {lines}");
}

/// `--no-api --config-file` boots at once; `--metrics-path` to a FIFO gets JSON lines, the log
/// shows level and origin when asked, and every other flag is taken.
#[test]
fn firecracker_no_api_config_file_with_metrics_fifo_and_every_logging_flag() {
    require_kvm();
    let (dir, link) = firecracker_link();
    let config = dir.path().join("vm.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "boot-source": {"kernel_image_path": tiny("pvh.elf"), "boot_args": "console=ttyS0"},
            "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
        })
        .to_string(),
    )
    .unwrap();
    let fifo = dir.path().join("metrics.fifo");
    mkfifo(&fifo);
    let log = dir.path().join("fc.log");
    std::fs::write(&log, b"").unwrap();
    // Read the FIFO as a metrics collector would, from before fennec starts.
    let reader_path = fifo.clone();
    let reader = std::thread::spawn(move || {
        let file = std::fs::File::open(reader_path).unwrap();
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let args = [
        "--no-api",
        "--config-file",
        config.to_str().unwrap(),
        "--boot-timer",
        "--metrics-path",
        fifo.to_str().unwrap(),
        "--log-path",
        log.to_str().unwrap(),
        "--level",
        "Debug",
        "--show-level",
        "--show-log-origin",
        "--id",
        "batch-1",
        "--start-time-us",
        "1",
        "--start-time-cpu-us",
        "2",
        "--parent-cpu-time-us",
        "3",
        "--http-api-max-payload-size",
        "4096",
        "--mmds-size-limit",
        "1000",
        "--module",
        "fennec",
        "--no-seccomp",
    ];
    let mut child = Command::new(&link)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = collect(child.stderr.take().unwrap());
    let status = wait_with_timeout(&mut child, TIMEOUT).expect("the tiny guest resets");
    assert!(status.success(), "{status}: {}", stderr.lock().unwrap());
    let lines = reader.join().unwrap();
    assert!(lines.len() >= 2, "metrics lines: {lines:?}");
    // Firecracker's schema: its groups, the timestamp first, counters as what they gained
    // since the line before (the guest's serial output is all in the first line or two).
    let mut written = 0;
    for line in &lines {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        let groups: Vec<&String> = m.as_object().unwrap().keys().collect();
        assert_eq!(groups[0], "utc_timestamp_ms", "{line}");
        assert!(m["utc_timestamp_ms"].as_u64().unwrap() > 0, "{line}");
        for group in [
            "api_server",
            "block",
            "net",
            "vcpu",
            "uart",
            "i8042",
            "vsock",
        ] {
            assert!(m[group].is_object(), "no {group}: {line}");
        }
        assert!(m.get("vcpus").is_none(), "fennec's own shape: {line}");
        assert!(m["vcpu"]["exit_io_out_agg"]["sum_us"].is_u64(), "{line}");
        written += m["uart"]["write_count"].as_u64().unwrap();
    }
    assert!(written > 0, "the guest's console output counted: {lines:?}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("[batch-1:main:INFO:src/"), "{log}");
    assert!(
        log.contains("Guest boot time"),
        "the boot timer's line: {log}"
    );
    assert!(log.contains(":DEBUG:"), "{log}");
}

/// `--http-api-max-payload-size` is the control socket's body limit.
#[test]
fn firecracker_api_payload_limit_applies() {
    let (dir, link) = firecracker_link();
    let socket = dir.path().join("fc.sock");
    let mut child = spawn_fc(&link, &socket, &["--http-api-max-payload-size", "100"]);
    let big = format!(r#"{{"kernel_image_path": "{}"}}"#, "k".repeat(200));
    let answer = common::raw(&socket, &request("PUT", "/boot-source", &big), TIMEOUT);
    assert_eq!(common::status_of(&answer), 413, "{answer}");
    let (status, _) = api_call(&socket, "PUT", "/actions", r#"{"action_type": "Stop"}"#);
    assert_eq!(status, 200);
    wait_with_timeout(&mut child, TIMEOUT).expect("fennec exits after Stop");
}

/// `PUT /logger` configures the log once, as Firecracker's does: not over `--log-path`, not
/// twice, not with a level Firecracker does not have; `fennec run` refuses it with the reason.
#[test]
fn firecracker_put_logger_configures_the_log_once() {
    require_kvm();
    let (dir, link) = firecracker_link();
    let start = |name: &str, extra: &[&str]| {
        let socket = dir.path().join(name);
        let mut args = vec!["--id", "lg"];
        args.extend(extra);
        (spawn_fc(&link, &socket, &args), socket)
    };
    let log = dir.path().join("api.log");
    std::fs::write(&log, b"").unwrap();
    let (mut child, socket) = start("a.sock", &[]);
    let put = |body: serde_json::Value| api_call(&socket, "PUT", "/logger", &body.to_string());
    let (status, answer) = put(serde_json::json!({"log_path": log, "level": "Loud"}));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["fault_message"].as_str().unwrap().contains("Loud"),
        "{answer}"
    );
    let (status, answer) = put(serde_json::json!({"log_path": log, "level": "Info",
                                                   "show_level": true, "show_log_origin": false}));
    assert_eq!(status, 204, "{answer}");
    let (status, answer) = put(serde_json::json!({"level": "Debug"}));
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("Reinitialization"), "{answer}");
    let kernel = tiny("pvh.elf");
    let boot = serde_json::json!({"kernel_image_path": kernel, "boot_args": "console=ttyS0"});
    assert_eq!(
        api_call(&socket, "PUT", "/boot-source", &boot.to_string()).0,
        204
    );
    let start_vm = r#"{"action_type": "InstanceStart"}"#;
    assert_eq!(api_call(&socket, "PUT", "/actions", start_vm).0, 204);
    // The tiny guest resets at once after its report: fennec ends.
    wait_with_timeout(&mut child, TIMEOUT).expect("fennec ends with its guest");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("[lg:main:INFO] VM \"lg\" started"), "{text}");
    assert!(!text.contains(":DEBUG]"), "{text}");

    // Over --log-path: refused.
    let (mut child, socket) = start("b.sock", &["--log-path", log.to_str().unwrap()]);
    let (status, _) = api_call(&socket, "PUT", "/logger", r#"{"level": "Debug"}"#);
    assert_eq!(status, 400);
    assert_eq!(
        api_call(&socket, "PUT", "/actions", r#"{"action_type": "Stop"}"#).0,
        200
    );
    wait_with_timeout(&mut child, TIMEOUT).expect("fennec exits after Stop");

    // `fennec run` has its own logger.
    let socket = dir.path().join("c.sock");
    let mut child = common::spawn_api(&[], &socket);
    let (status, answer) = api_call(&socket, "PUT", "/logger", r#"{"level": "Debug"}"#);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.to_string().contains("runs as firecracker"),
        "{answer}"
    );
    assert_eq!(
        api_call(&socket, "PUT", "/actions", r#"{"action_type": "Stop"}"#).0,
        200
    );
    wait_with_timeout(&mut child, TIMEOUT).expect("fennec exits after Stop");
}

/// An argument that is not UTF-8 (a path may be anything) is an error, not a panic: as
/// `firecracker` Firecracker's kind of error, as `fennec run` the file it names.
#[test]
fn arguments_that_are_not_utf8_are_errors_not_panics() {
    use std::os::unix::ffi::OsStrExt;
    let odd = std::ffi::OsStr::from_bytes(b"/nonexistent/\xff");
    let (_dir, link) = firecracker_link();
    let out = Command::new(&link).arg("--id").arg(odd).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(153), "{stderr}");
    assert!(stderr.contains("is not valid UTF-8"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_fennec"))
        .args(["run", "--kernel"])
        .arg(odd)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Cannot open kernel /nonexistent/"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The metadata service's control side as Firecracker's clients use it: `--metadata` and
/// `--mmds-size-limit`, then `GET`, `PATCH`, `PUT /mmds` and `PUT /mmds/config`, with the
/// refusals a client can cause.
#[test]
fn firecracker_mmds_document_and_configuration() {
    let (dir, link) = firecracker_link();
    let socket = dir.path().join("fc.sock");
    let metadata = dir.path().join("metadata.json");
    std::fs::write(
        &metadata,
        r#"{"latest": {"meta-data": {"instance-id": "i-1"}}}"#,
    )
    .unwrap();
    let mut child = spawn_fc(
        &link,
        &socket,
        &[
            "--metadata",
            metadata.to_str().unwrap(),
            "--mmds-size-limit",
            "200",
        ],
    );
    let call = |method: &str, path: &str, body: &str| api_call(&socket, method, path, body);
    let (status, doc) = call("GET", "/mmds", "");
    assert_eq!(status, 200);
    assert_eq!(doc["latest"]["meta-data"]["instance-id"], "i-1");

    let patch = r#"{"latest": {"meta-data": {"hostname": "web1", "instance-id": null}}}"#;
    assert_eq!(call("PATCH", "/mmds", patch).0, 204);
    let (_, doc) = call("GET", "/mmds", "");
    assert_eq!(
        doc,
        serde_json::json!({"latest": {"meta-data": {"hostname": "web1"}}})
    );

    let big = format!(r#"{{"blob": "{}"}}"#, "x".repeat(300));
    let (status, error) = call("PUT", "/mmds", &big);
    assert_eq!(status, 400);
    assert!(
        error["fault_message"]
            .as_str()
            .unwrap()
            .contains("limit of 200"),
        "{error}"
    );
    assert_eq!(
        call("GET", "/mmds", "").1["latest"]["meta-data"]["hostname"],
        "web1"
    );
    assert_eq!(call("PUT", "/mmds", "[1, 2]").0, 400);

    // The configuration names interfaces the VM has, at a link-local address.
    let config = r#"{"version": "V2", "network_interfaces": ["eth0"]}"#;
    let (status, error) = call("PUT", "/mmds/config", config);
    assert_eq!(status, 400);
    assert!(
        error["fault_message"]
            .as_str()
            .unwrap()
            .contains("PUT /network-interfaces/eth0"),
        "{error}"
    );
    let iface = r#"{"iface_id": "eth0", "host_dev_name": "tap-mmds0"}"#;
    assert_eq!(call("PUT", "/network-interfaces/eth0", iface).0, 204);
    let elsewhere =
        r#"{"version": "V2", "network_interfaces": ["eth0"], "ipv4_address": "10.0.0.1"}"#;
    assert_eq!(call("PUT", "/mmds/config", elsewhere).0, 400);
    assert_eq!(call("PUT", "/mmds/config", r#"{"version": "V7"}"#).0, 400);
    assert_eq!(call("PUT", "/mmds/config", config).0, 204);
    let (_, vm) = call("GET", "/vm/config", "");
    assert_eq!(vm["mmds-config"]["version"], "V2");
    assert_eq!(
        vm["mmds-config"]["network_interfaces"],
        serde_json::json!(["eth0"])
    );

    let (status, _) = call("PUT", "/actions", r#"{"action_type": "Stop"}"#);
    assert_eq!(status, 200);
    wait_with_timeout(&mut child, TIMEOUT).expect("fennec exits after Stop");
}

/// As Firecracker, a running VM's drive may be switched (PATCH /drives) to any file the
/// operator names, beside its first image or elsewhere (the file is opened outside the
/// confinement of the guest-facing threads); a file that is not there is a 400 with its path.
#[test]
fn firecracker_patch_drive_reaches_any_file_the_operator_names() {
    let (dir, link) = firecracker_link();
    let socket = dir.path().join("fc.sock");
    let images = dir.path().join("images");
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::create_dir(&images).unwrap();
    for path in [
        images.join("stub.img"),
        images.join("real.img"),
        elsewhere.path().join("other.img"),
    ] {
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
    }
    let mut child = spawn_fc(&link, &socket, &[]);
    let call = |method: &str, path: &str, body: &str| api_call(&socket, method, path, body);
    let boot = serde_json::json!({
        "kernel_image_path": tiny("pvh.elf"),
        "boot_args": "console=ttyS0 tiny.mode=idle",
    });
    assert_eq!(call("PUT", "/boot-source", &boot.to_string()).0, 204);
    let drive = |path: &Path| {
        serde_json::json!({"drive_id": "data", "path_on_host": path, "is_root_device": false,
                           "is_read_only": false})
        .to_string()
    };
    assert_eq!(
        call("PUT", "/drives/data", &drive(&images.join("stub.img"))).0,
        204
    );
    assert_eq!(
        call("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#).0,
        204
    );
    let patch =
        |path: &Path| serde_json::json!({"drive_id": "data", "path_on_host": path}).to_string();
    let (status, body) = call("PATCH", "/drives/data", &patch(&images.join("real.img")));
    assert_eq!(status, 204, "{body}");
    let (status, body) = call(
        "PATCH",
        "/drives/data",
        &patch(&elsewhere.path().join("other.img")),
    );
    assert_eq!(status, 204, "{body}");
    let missing = elsewhere.path().join("missing.img");
    let (status, body) = call("PATCH", "/drives/data", &patch(&missing));
    assert_eq!(status, 400, "{body}");
    let message = body["fault_message"].as_str().unwrap();
    assert!(message.contains("missing.img"), "{body}");
    assert_eq!(call("PUT", "/actions", r#"{"action_type": "Stop"}"#).0, 200);
    wait_with_timeout(&mut child, TIMEOUT).expect("fennec exits after Stop");
}
