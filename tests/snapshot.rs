//! Snapshots of a paused VM over the control socket (Firecracker's `PUT /snapshot/create` and
//! `PUT /snapshot/load`), restored in a new fennec process: the tiny counter guest goes on
//! counting from where it was, its keyboard and console still work; a disk guest's queue goes
//! on; damaged state files are refused before any VM exists.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::running::Running;
use common::{api_call, TIMEOUT};

/// The counter guest's ticks printed so far, in order.
fn ticks(console: &str) -> Vec<u64> {
    console
        .lines()
        .filter_map(|l| l.strip_prefix("TINY tick "))
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

fn wait_until(what: &str, vm: &Running, mut done: impl FnMut(&str) -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done(&vm.stdout.lock().unwrap()) {
        assert!(Instant::now() < deadline, "{what}\n{}", vm.context());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ok(socket: &Path, method: &str, path: &str, body: &str) -> serde_json::Value {
    let (status, answer) = api_call(socket, method, path, body);
    assert!(
        (200..300).contains(&status),
        "{method} {path} {body}: {status} {answer}"
    );
    answer
}

/// `fennec run --api-socket api.sock` with the counter guest on `vcpus` vCPUs, once it has
/// counted a few ticks.
fn counting(_dir: &Path, vcpus: &str) -> Running {
    let vm = Running::spawn(
        &[
            "run",
            "--api-socket",
            "api.sock",
            "--vcpus",
            vcpus,
            "--kernel",
            common::tiny("pvh.elf").to_str().unwrap(),
            "--cmdline",
            "console=ttyS0 tiny.mode=counter counter.delay=200000",
        ],
        &[],
    );
    wait_until("a few ticks", &vm, |out| ticks(out).len() >= 3);
    vm
}

/// The counter guest on `vcpus` vCPUs ([`counting`]), paused after a few ticks and
/// snapshotted to `dir`. Returns the last tick before
/// the pause.
fn counter_snapshot(dir: &Path, vcpus: &str) -> u64 {
    let mut vm = counting(dir, vcpus);
    let socket = vm.socket();
    ok(&socket, "PATCH", "/vm", r#"{"state": "Paused"}"#);
    // What the guest printed before the pause reaches us through the console's pipe.
    std::thread::sleep(Duration::from_millis(300));
    let last = *ticks(&vm.stdout.lock().unwrap()).last().unwrap();
    let create = serde_json::json!({
        "snapshot_type": "Full",
        "snapshot_path": dir.join("vm.state"),
        "mem_file_path": dir.join("vm.mem"),
    });
    ok(&socket, "PUT", "/snapshot/create", &create.to_string());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        *ticks(&vm.stdout.lock().unwrap()).last().unwrap(),
        last,
        "a paused VM does not count"
    );
    ok(&socket, "PUT", "/actions", r#"{"action_type": "Stop"}"#);
    vm.wait(TIMEOUT).expect("fennec ends after Stop");
    last
}

/// A fresh fennec with only a control socket.
fn empty_fennec() -> Running {
    let mut vm = Running::spawn(&["run", "--api-socket", "api.sock"], &[]);
    let socket = vm.socket();
    common::wait_for_socket(&mut vm.child, &socket, String::new);
    vm
}

fn load_body(dir: &Path, resume: bool) -> String {
    serde_json::json!({
        "snapshot_path": dir.join("vm.state"),
        "mem_backend": {"backend_type": "File", "backend_path": dir.join("vm.mem")},
        "resume_vm": resume,
    })
    .to_string()
}

fn restore_and_check(dir: &Path, last: u64) {
    let mut vm = empty_fennec();
    let socket = vm.socket();
    ok(&socket, "PUT", "/snapshot/load", &load_body(dir, true));
    wait_until("counting on", &vm, |out| ticks(out).len() >= 2);
    let out = vm.stdout.lock().unwrap().clone();
    let resumed = ticks(&out);
    assert_eq!(
        resumed[0],
        last + 1,
        "the counter continues from the saved value, not from zero:\n{out}"
    );
    assert!(!out.contains("TINY boot"), "restored, not booted:\n{out}");
    let info = ok(&socket, "GET", "/", "");
    assert_eq!(info["state"], "Running");
    // The keyboard and the console still work: Ctrl-Alt-Del ends the guest.
    ctrl_alt_del_ends_it(&socket, &mut vm);
}

/// Sends Ctrl-Alt-Del to the counter guest behind `socket`: it must say so and reset, which
/// ends fennec with status 0.
fn ctrl_alt_del_ends_it(socket: &Path, vm: &mut Running) {
    ok(
        socket,
        "PUT",
        "/actions",
        r#"{"action_type": "SendCtrlAltDel"}"#,
    );
    let status = vm.wait(TIMEOUT).expect("the guest resets");
    assert!(status.success(), "{status}\n{}", vm.context());
    assert!(vm.stdout.lock().unwrap().contains("TINY ctrl-alt-del"));
}

#[test]
fn a_snapshot_over_the_files_a_running_vm_was_restored_from_leaves_it_running() {
    let dir = tempfile::tempdir().unwrap();
    counter_snapshot(dir.path(), "1");
    // A VM restored from the files maps the memory file privately: the pages it has not
    // written are the file's.
    let mut vm = empty_fennec();
    let socket = vm.socket();
    ok(
        &socket,
        "PUT",
        "/snapshot/load",
        &load_body(dir.path(), true),
    );
    wait_until("counting on", &vm, |out| ticks(out).len() >= 2);
    // The same VM snapshotted into the same files, while it is mapping them.
    ok(&socket, "PATCH", "/vm", r#"{"state": "Paused"}"#);
    let create = serde_json::json!({
        "snapshot_path": dir.path().join("vm.state"),
        "mem_file_path": dir.path().join("vm.mem"),
    });
    ok(&socket, "PUT", "/snapshot/create", &create.to_string());
    let saved = ticks(&vm.stdout.lock().unwrap());
    let (before, saved_at) = (saved.len(), *saved.last().unwrap());
    ok(&socket, "PATCH", "/vm", r#"{"state": "Resumed"}"#);
    // Its code and data are still what they were: it counts on, and answers Ctrl-Alt-Del.
    // (A tick is more than a second of vCPU time on a nested host: two are enough to see.)
    wait_until("counting on after the new snapshot", &vm, |out| {
        ticks(out).len() >= before + 2
    });
    let counted = ticks(&vm.stdout.lock().unwrap());
    assert!(
        counted.windows(2).all(|w| w[1] == w[0] + 1),
        "the counter skipped or went back: {counted:?}"
    );
    ctrl_alt_del_ends_it(&socket, &mut vm);
    // No temporary file is left, and the new snapshot restores.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    restore_and_check(dir.path(), saved_at);
}

#[test]
fn snapshot_of_the_counter_guest_restores_in_a_new_process_and_counts_on() {
    let dir = tempfile::tempdir().unwrap();
    let last = counter_snapshot(dir.path(), "1");
    let state = std::fs::metadata(dir.path().join("vm.state")).unwrap();
    let mem = std::fs::metadata(dir.path().join("vm.mem")).unwrap();
    assert_eq!(mem.len(), 128 << 20, "the memory file is the guest's RAM");
    {
        use std::os::unix::fs::MetadataExt;
        assert!(
            mem.blocks() * 512 < 16 << 20,
            "pages of zeros are holes: {} bytes on disk",
            mem.blocks() * 512
        );
    }
    assert!(state.len() < 1 << 20, "{} bytes of state", state.len());
    // As firecracker, fennec describes its snapshots' format.
    let described = std::process::Command::new(common::linux::fennec_bin())
        .args(["firecracker", "--describe-snapshot"])
        .arg(dir.path().join("vm.state"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&described.stdout);
    let version = format!("v{}.0.0 (fennec ", fennec::snapshot::FORMAT_VERSION);
    assert!(said.starts_with(&version), "{said}");
    restore_and_check(dir.path(), last);
}

#[test]
fn snapshot_with_two_vcpus_restores_both() {
    let dir = tempfile::tempdir().unwrap();
    let last = counter_snapshot(dir.path(), "2");
    restore_and_check(dir.path(), last);
}

#[test]
fn snapshot_loaded_paused_waits_for_resume() {
    let dir = tempfile::tempdir().unwrap();
    let last = counter_snapshot(dir.path(), "1");
    let mut vm = empty_fennec();
    let socket = vm.socket();
    ok(
        &socket,
        "PUT",
        "/snapshot/load",
        &load_body(dir.path(), false),
    );
    assert_eq!(ok(&socket, "GET", "/", "")["state"], "Paused");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        ticks(&vm.stdout.lock().unwrap()).is_empty(),
        "a VM loaded without resume_vm does not run"
    );
    ok(&socket, "PATCH", "/vm", r#"{"state": "Resumed"}"#);
    wait_until("counting on", &vm, |out| !ticks(out).is_empty());
    assert_eq!(ticks(&vm.stdout.lock().unwrap())[0], last + 1);
    ok(&socket, "PUT", "/actions", r#"{"action_type": "Stop"}"#);
    vm.wait(TIMEOUT);
}

/// What `PUT /snapshot/load` says of `state_file`, in a fresh fennec.
fn load_refusal(dir: &Path, state_file: &Path) -> String {
    load_refusal_and_peak(dir, state_file).0
}

/// [`load_refusal`], and the refusing fennec's peak resident memory in KiB.
fn load_refusal_and_peak(dir: &Path, state_file: &Path) -> (String, u64) {
    let mut vm = empty_fennec();
    let socket = vm.socket();
    let body = serde_json::json!({
        "snapshot_path": state_file,
        "mem_backend": {"backend_type": "File", "backend_path": dir.join("vm.mem")},
    });
    let (status, answer) = api_call(&socket, "PUT", "/snapshot/load", &body.to_string());
    assert_eq!(status, 400, "{answer}");
    // No VM was made: the service still takes a configuration.
    assert_eq!(ok(&socket, "GET", "/", "")["state"], "Not started");
    let proc = PathBuf::from(format!("/proc/{}", vm.child.id()));
    let peak = common::procfs::status_field(&proc, "VmHWM").unwrap_or_default();
    let peak_kib = peak.trim_end_matches(" kB").parse().unwrap_or(u64::MAX);
    ok(&socket, "PUT", "/actions", r#"{"action_type": "Stop"}"#);
    vm.wait(TIMEOUT);
    (
        answer["fault_message"].as_str().unwrap().to_string(),
        peak_kib,
    )
}

/// `payload` as a state file, its header and checksum valid: only what is inside can be
/// wrong.
fn state_file(payload: &[u8]) -> Vec<u8> {
    let mut out = b"FNECSNAP".to_vec();
    out.extend_from_slice(&fennec::snapshot::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn crafted_state_files_are_refused_while_read_and_cost_no_more_than_their_size() {
    let dir = tempfile::tempdir().unwrap();
    counter_snapshot(dir.path(), "1");
    let good = std::fs::read(dir.path().join("vm.state")).unwrap();
    let state: serde_json::Value = serde_json::from_slice(&good[24..]).unwrap();
    // Five million interrupt controllers of three bytes each (`[],`), each of which would be
    // a 520-byte structure: 15 MB of file, 2.5 GB of memory if it were read whole.
    let craft = |pointer: &str, element: &str, count: usize| -> PathBuf {
        let mut payload = state.to_string();
        let list = format!("[{}]", vec![element; count].join(","));
        let original = state.pointer(pointer).unwrap().to_string();
        payload = payload.replacen(&original, &list, 1);
        let path = dir.path().join(pointer.replace('/', "_"));
        std::fs::write(&path, state_file(payload.as_bytes())).unwrap();
        path
    };
    for (pointer, element, count, bound) in [
        ("/machine/vm/irqchips", "[]", 5_000_000, "at most 3"),
        ("/machine/vcpus/0/msrs", "[]", 2_000_000, "at most 1024"),
        ("/machine/vcpus/0/cpuid", "[]", 2_000_000, "at most 256"),
        ("/memory", "[0,0]", 1_000_000, "at most 2"),
    ] {
        let file = craft(pointer, element, count);
        let (said, peak_kib) = load_refusal_and_peak(dir.path(), &file);
        assert!(said.contains(bound), "{pointer}: {said}");
        assert!(
            peak_kib < 256 << 10,
            "{pointer}: refusing a {} MB file took {} MB",
            std::fs::metadata(&file).unwrap().len() >> 20,
            peak_kib >> 10
        );
    }
}

#[test]
fn damaged_snapshots_are_refused_with_a_clear_error_and_no_vm() {
    let dir = tempfile::tempdir().unwrap();
    counter_snapshot(dir.path(), "1");
    let good = std::fs::read(dir.path().join("vm.state")).unwrap();
    let write = |name: &str, bytes: &[u8]| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let said = load_refusal(dir.path(), &write("flipped", &flipped));
    assert!(said.contains("corrupted"), "{said}");
    let said = load_refusal(dir.path(), &write("truncated", &good[..good.len() - 100]));
    assert!(said.contains("truncated"), "{said}");
    let mut version = good.clone();
    version[8] = 99;
    let said = load_refusal(dir.path(), &write("version", &version));
    assert!(said.contains("format version 99"), "{said}");
    let said = load_refusal(
        dir.path(),
        &write("garbage", b"not a snapshot at all, really"),
    );
    assert!(said.contains("not a fennec snapshot"), "{said}");
    // A whole, valid state file that someone else could have written: the drives and TAPs it
    // names would be theirs to choose.
    use std::os::unix::fs::PermissionsExt;
    let theirs = write("theirs", &good);
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let said = load_refusal(dir.path(), &theirs);
    assert!(said.contains("owned by uid 65534"), "{said}");
    let shared = write("shared", &good);
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o664)).unwrap();
    let said = load_refusal(dir.path(), &shared);
    assert!(
        said.contains("written by its group or by everyone (mode 664)"),
        "{said}"
    );
    // A memory file of the wrong size.
    std::fs::write(dir.path().join("vm.mem"), vec![0u8; 4096]).unwrap();
    let said = load_refusal(dir.path(), &dir.path().join("vm.state"));
    assert!(said.contains("memory file has 4096 bytes"), "{said}");
}

#[test]
fn snapshot_create_refused_while_running_and_load_after_configuring() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = Running::start(&["--api-socket", "api.sock"], &[]);
    vm.wait_for_console("TINY ready");
    let socket = vm.socket();
    let create = serde_json::json!({
        "snapshot_path": dir.path().join("s"), "mem_file_path": dir.path().join("m"),
    });
    let (status, answer) = api_call(&socket, "PUT", "/snapshot/create", &create.to_string());
    assert_eq!(status, 400);
    assert!(
        answer["fault_message"]
            .as_str()
            .unwrap()
            .contains("pause it first"),
        "{answer}"
    );
    let diff = r#"{"snapshot_type": "Diff", "snapshot_path": "/s", "mem_file_path": "/m"}"#;
    assert_eq!(api_call(&socket, "PUT", "/snapshot/create", diff).0, 400);
    ok(&socket, "PUT", "/actions", r#"{"action_type": "Stop"}"#);
    vm.wait(TIMEOUT);

    let mut fresh = empty_fennec();
    let socket = fresh.socket();
    let boot = serde_json::json!({"kernel_image_path": common::tiny("pvh.elf")});
    ok(&socket, "PUT", "/boot-source", &boot.to_string());
    let (status, answer) = api_call(
        &socket,
        "PUT",
        "/snapshot/load",
        &load_body(dir.path(), true),
    );
    assert_eq!(status, 400);
    assert!(
        answer["fault_message"]
            .as_str()
            .unwrap()
            .contains("after configuring"),
        "{answer}"
    );
    ok(&socket, "PUT", "/actions", r#"{"action_type": "Stop"}"#);
    fresh.wait(TIMEOUT);
}

#[test]
fn snapshot_of_a_disk_guest_keeps_its_queue_going() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let disk_arg = format!("path={}", disk.display());
    let mut vm = Running::spawn(
        &[
            "run",
            "--api-socket",
            "api.sock",
            "--disk",
            &disk_arg,
            "--kernel",
            common::tiny("pvh.elf").to_str().unwrap(),
            "--cmdline",
            "console=ttyS0 tiny.mode=disk disk.stamp=first disk.wait",
        ],
        &[],
    );
    vm.wait_for_console("TINY disk waiting");
    let socket = vm.socket();
    ok(&socket, "PATCH", "/vm", r#"{"state": "Paused"}"#);
    let create = serde_json::json!({
        "snapshot_path": dir.path().join("vm.state"),
        "mem_file_path": dir.path().join("vm.mem"),
    });
    ok(&socket, "PUT", "/snapshot/create", &create.to_string());
    ok(&socket, "PUT", "/actions", r#"{"action_type": "Stop"}"#);
    vm.wait(TIMEOUT).expect("fennec ends after Stop");

    // In a new process the guest, still waiting for its byte, writes through the same queue.
    let mut restored = empty_fennec();
    let socket = restored.socket();
    ok(
        &socket,
        "PUT",
        "/snapshot/load",
        &load_body(dir.path(), true),
    );
    restored
        .child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"x")
        .unwrap();
    restored.wait_for_console("TINY disk done");
    assert!(
        restored
            .stdout
            .lock()
            .unwrap()
            .contains("TINY disk wrote s2 ok"),
        "{}",
        restored.context()
    );
    let status = restored.wait(TIMEOUT).expect("the guest ends");
    assert!(status.success(), "{status}");
    let image = std::fs::read(&disk).unwrap();
    assert!(
        image[1024..].starts_with(b"fennec-later:first"),
        "sector 2 written"
    );
    assert!(
        image[512..].starts_with(b"fennec-stamp:first"),
        "sector 1 kept"
    );
    // Only the new request ran: the device took the queue up where it was, re-running
    // nothing the driver had already seen done.
    let stderr = restored.stderr.lock().unwrap().clone();
    let drive_line = stderr
        .lines()
        .find(|l| l.contains("Drive \"disk0\":") && l.contains("write_count="))
        .unwrap_or_else(|| panic!("no drive metrics:\n{stderr}"));
    // (Counters at zero are left out of the line.)
    assert!(!drive_line.contains("read_count="), "{drive_line}");
    assert!(drive_line.contains("write_count=1 "), "{drive_line}");
    assert!(drive_line.contains("flush_count=1 "), "{drive_line}");
}

#[test]
fn ctl_snapshot_vm_then_run_restore_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap");
    let mut vm = counting(dir.path(), "1");
    let socket = vm.socket();
    let saved = common::ctl(&socket, &["snapshot-vm", snap.to_str().unwrap()]);
    assert_eq!(saved["state"], snap.join("state").to_str().unwrap());
    // The VM runs on after its snapshot.
    assert_eq!(ok(&socket, "GET", "/", "")["state"], "Running");
    let before = ticks(&vm.stdout.lock().unwrap()).len();
    wait_until("counting on after the snapshot", &vm, |out| {
        ticks(out).len() > before + 2
    });
    ok(&socket, "PUT", "/actions", r#"{"action_type": "Stop"}"#);
    vm.wait(TIMEOUT);

    // The snapshot, restored straight from the command line, console on stdio.
    let mut restored = Running::spawn(&["run", "--restore", snap.to_str().unwrap()], &[]);
    wait_until("counting in the restored VM", &restored, |out| {
        ticks(out).len() >= 2
    });
    let first = ticks(&restored.stdout.lock().unwrap())[0];
    assert!(first > 2, "it went on from the snapshot, at tick {first}");
    // SAFETY: kill on our own child's PID.
    unsafe { libc::kill(restored.child.id() as i32, libc::SIGTERM) };
    restored.wait(TIMEOUT).expect("SIGTERM stops it");

    // And into a waiting fennec, paused.
    let waiting = empty_fennec();
    let answer = common::ctl(
        &waiting.socket(),
        &["restore", snap.to_str().unwrap(), "--paused"],
    );
    assert!(answer.is_null(), "{answer}");
    assert_eq!(ok(&waiting.socket(), "GET", "/", "")["state"], "Paused");
}

#[test]
fn vcpu_state_keeps_every_msr_of_a_long_list_and_puts_them_all_back() {
    use fennec::vstate::{kvm::KvmContext, memory, vcpu::Vcpu, vm::KvmVm};
    common::require_kvm();
    // MSRs every x86_64 vCPU has, repeated to 300: read 64 at a time, and more than the 256
    // KVM takes in one write.
    let known = [
        0x174,
        0x175,
        0x176,
        0xc000_0081,
        0xc000_0082,
        0xc000_0084,
        0xc000_0102,
    ];
    let list: std::sync::Arc<[u32]> = known.iter().copied().cycle().take(300).collect();
    let kvm = KvmContext::open().unwrap();
    let mem = memory::create_guest_memory(16 << 20).unwrap();
    let vm = KvmVm::new(&kvm, &mem).unwrap();
    let vcpu = Vcpu::new(&vm, 0, list.clone()).unwrap();
    let saved = vcpu.save_state().unwrap();
    let indices: Vec<u32> = saved.msrs.iter().map(|m| m.index).collect();
    assert_eq!(indices, list.to_vec(), "an MSR of the list went missing");
    let vm2 = KvmVm::new(&kvm, &memory::create_guest_memory(16 << 20).unwrap()).unwrap();
    let again = Vcpu::new(&vm2, 0, list).unwrap();
    again.restore_state(&saved).unwrap();
}
