//! The entropy device (virtio-rng) as Firecracker configures it, `entropy` in a configuration
//! file and `PUT /entropy`, driven by the tiny kernel's driver (`tiny.mode=rng`).

mod common;

use common::{api_call, fennec, require_kvm, spawn_api, tiny, wait_with_timeout, TIMEOUT};

/// A configuration file for the tiny kernel in `tiny.mode=rng`, with `entropy` as given.
fn config_file(entropy: serde_json::Value) -> (tempfile::TempDir, std::path::PathBuf) {
    let config = serde_json::json!({
        "boot-source": {
            "kernel_image_path": tiny("pvh.elf"),
            "boot_args": "console=ttyS0 tiny.mode=rng",
        },
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
        "entropy": entropy,
    });
    common::temp_file("vm.json", config.to_string().as_bytes())
}

/// The value of `key=` on the tiny driver's line that starts with `prefix`.
fn field<'a>(out: &'a str, prefix: &str, key: &str) -> &'a str {
    let line = out
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn entropy_device_fills_requests_and_survives_hostile_ones() {
    require_kvm();
    let (_dir, config) = config_file(serde_json::json!({}));
    let run = fennec(&["run", "--config-file", config.to_str().unwrap(), "-v"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = &run.stdout;
    assert!(out.contains("TINY rng found"), "{out}");
    let reqs: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("TINY rng req"))
        .collect();
    assert_eq!(reqs.len(), 2, "{out}");
    for r in &reqs {
        assert!(r.contains("used=64"), "both buffers of a chain filled: {r}");
    }
    assert_eq!(field(out, "TINY rng differ", "differ"), "1", "{out}");
    assert_eq!(field(out, "TINY rng bad=wrong_dir", "used"), "0");
    assert_eq!(field(out, "TINY rng bad=oob", "used"), "0");
    assert_eq!(field(out, "TINY rng then", "used"), "32", "it still serves");
    assert!(out.contains("TINY rng done"), "{out}");
    assert!(
        run.stderr
            .contains("Entropy device \"rng\": the host's getrandom(2), virtio-mmio at 0xd0000000"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("requests=3 bytes=160 bad_chains=2"),
        "the device's counters: {}",
        run.stderr
    );
}

#[test]
fn entropy_device_absent_unless_configured_and_put_entropy_adds_it() {
    require_kvm();
    let (_dir, config) = config_file(serde_json::Value::Null);
    let run = fennec(&["run", "--config-file", config.to_str().unwrap()]);
    assert!(run.stdout.contains("TINY rng none"), "{}", run.stdout);

    // Through the control socket, as Firecracker's clients add it.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let mut child = spawn_api(&["-v"], &socket);
    let boot = serde_json::json!({
        "kernel_image_path": tiny("pvh.elf"),
        "boot_args": "console=ttyS0 tiny.mode=rng",
    });
    let call = |m: &str, p: &str, b: &str| api_call(&socket, m, p, b).0;
    assert_eq!(call("PUT", "/boot-source", &boot.to_string()), 204);
    assert_eq!(call("PUT", "/entropy", r#"{"rate": 1}"#), 400);
    let limited = r#"{"rate_limiter": {"bandwidth": {"size": 1048576, "refill_time": 1000}}}"#;
    assert_eq!(call("PUT", "/entropy", limited), 204);
    let (_, vm) = api_call(&socket, "GET", "/vm/config", "");
    assert_eq!(vm["entropy"]["rate_limiter"]["bandwidth"]["size"], 1048576);
    assert_eq!(
        call("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#),
        204
    );
    assert_eq!(call("PUT", "/entropy", "{}"), 400, "pre-boot only");
    let status = wait_with_timeout(&mut child, TIMEOUT).expect("the tiny guest ends");
    assert!(status.success(), "{status}");
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    // The guest's three good requests, through the limiter.
    assert!(log.contains("requests=3 bytes=160"), "{log}");
}
