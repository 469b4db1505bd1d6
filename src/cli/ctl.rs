//! `fennec ctl`: one request to a running fennec's control socket, its answer on stdout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use fennec::api::service::one_line;
use fennec::api::{client, routes};

#[derive(Args)]
pub struct CtlArgs {
    /// The control socket of the fennec to talk to.
    #[arg(long, value_name = "PATH")]
    api_socket: PathBuf,

    /// Seconds to wait for an answer.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    wait: u64,

    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
pub enum CtlCommand {
    /// The VM's state, uptime, devices and, once it ended, why.
    Status,
    /// Instance information (Firecracker's GET /).
    Info,
    /// Every counter: serial, vCPU exits, drives, network interfaces.
    Metrics,
    /// The VM's configuration (GET /vm/config).
    Config,
    /// Boot the configured VM (InstanceStart).
    Start,
    /// Park every vCPU and stop serving devices.
    Pause,
    /// Continue a paused VM.
    Resume,
    /// Press Ctrl-Alt-Del on the guest's keyboard.
    CtrlAltDel,
    /// Ask the guest to shut down, then stop the VM if it has not ended within the timeout:
    /// the ACPI power button for a guest that listens to it (a distribution kernel), Ctrl-Alt-Del
    /// for one that does not.
    Shutdown {
        /// Seconds the guest gets to shut down.
        #[arg(long, value_name = "SECS", default_value_t = routes::DEFAULT_SHUTDOWN_TIMEOUT.as_secs())]
        timeout: u64,
    },
    /// Stop the VM now (and the fennec serving it).
    Stop,
    /// Snapshot a running VM's drive that was cloned from a template: the VM pauses, the
    /// drive is flushed, the store takes snapshot VM/DRIVE@NAME, the VM resumes.
    Snapshot {
        /// The drive's ID.
        drive: String,
        /// The snapshot's name.
        name: String,
    },
    /// Snapshot the whole VM into DIR (made if missing): its `state` and `memory` files. A
    /// running VM is paused for it and resumed after.
    SnapshotVm {
        /// The snapshot's directory.
        dir: PathBuf,
    },
    /// Checkpoint the VM: pause it, snapshot each of its disks in their image store as
    /// VM/DISK@NAME, write its state and memory beside them, resume. Every drive must come
    /// from a template with a VM name (`--disk template=T,vm=NAME`). Restore copies with
    /// `fennec run --from-checkpoint NAME --vm NEWNAME`.
    Checkpoint {
        /// The checkpoint's name.
        name: String,
    },
    /// Restore the VM snapshotted in DIR into this fennec, which must not be configured yet
    /// (`fennec run --api-socket` alone).
    Restore {
        /// The snapshot's directory.
        dir: PathBuf,
        /// Leave it paused (resume with `fennec ctl resume`).
        #[arg(long)]
        paused: bool,
    },
    /// Send any request: `fennec ctl --api-socket S request PUT /boot-source '{"kernel_image_path": "vmlinux"}'`.
    Request {
        /// GET, PUT or PATCH.
        method: String,
        /// The path, such as /machine-config.
        path: String,
        /// A JSON body.
        body: Option<String>,
    },
}

/// `fennec ctl`: one request, its answer on stdout.
pub fn ctl(args: &CtlArgs) -> ExitCode {
    if let CtlCommand::SnapshotVm { dir } = &args.command {
        return snapshot_vm(args, dir);
    }
    let action = |kind: &str| json!({ "action_type": kind });
    let (method, path, body): (&str, String, Option<Value>) = match &args.command {
        CtlCommand::Status => ("GET", "/status".into(), None),
        CtlCommand::Info => ("GET", "/".into(), None),
        CtlCommand::Metrics => ("GET", "/metrics".into(), None),
        CtlCommand::Config => ("GET", "/vm/config".into(), None),
        CtlCommand::Start => ("PUT", "/actions".into(), Some(action("InstanceStart"))),
        CtlCommand::Pause => ("PATCH", "/vm".into(), Some(json!({"state": "Paused"}))),
        CtlCommand::Resume => ("PATCH", "/vm".into(), Some(json!({"state": "Resumed"}))),
        CtlCommand::CtrlAltDel => ("PUT", "/actions".into(), Some(action("SendCtrlAltDel"))),
        CtlCommand::Shutdown { timeout } => (
            "PUT",
            "/actions".into(),
            Some(json!({"action_type": "Shutdown", "timeout_ms": timeout.saturating_mul(1000)})),
        ),
        CtlCommand::Stop => ("PUT", "/actions".into(), Some(action("Stop"))),
        CtlCommand::Snapshot { drive, name } => (
            "PUT",
            format!("/drives/{drive}/snapshot"),
            Some(json!({ "snapshot_name": name })),
        ),
        CtlCommand::SnapshotVm { .. } => unreachable!("answered above"),
        CtlCommand::Checkpoint { name } => (
            "PUT",
            "/checkpoint".into(),
            Some(json!({ "checkpoint_name": name })),
        ),
        CtlCommand::Restore { dir, paused } => {
            let (state, memory) = fennec::snapshot::files_in(&absolute(dir));
            (
                "PUT",
                "/snapshot/load".into(),
                Some(json!({
                    "snapshot_path": state,
                    "mem_backend": {"backend_type": "File", "backend_path": memory},
                    "resume_vm": !paused,
                })),
            )
        }
        CtlCommand::Request { method, path, body } => {
            let body = match body.as_deref().map(serde_json::from_str).transpose() {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("fennec ctl: the body is not JSON: {e}");
                    return ExitCode::from(2);
                }
            };
            (method.as_str(), path.clone(), body)
        }
    };
    // A shutdown answers when the guest ended, up to its timeout later.
    let wait = match &args.command {
        CtlCommand::Shutdown { timeout } => args.wait.max(timeout.saturating_add(10)),
        _ => args.wait,
    };
    let wait = Duration::from_secs(wait);
    match client::request(&args.api_socket, method, &path, body.as_ref(), wait) {
        Ok(reply) if reply.ok() => {
            if let Some(body) = reply.body {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&body).unwrap_or_else(|_| body.to_string())
                );
            }
            ExitCode::SUCCESS
        }
        Ok(reply) => {
            let fault = reply.fault().unwrap_or("no fault_message in the answer");
            eprintln!("fennec ctl: {} {}: {fault}", reply.status, path);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("fennec ctl: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `dir` as the fennec at the other end of the socket reads it: absolute.
fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// `fennec ctl snapshot-vm DIR`: pause (if running), `PUT /snapshot/create`, resume (if it
/// was running).
fn snapshot_vm(args: &CtlArgs, dir: &Path) -> ExitCode {
    let wait = Duration::from_secs(args.wait);
    let call = |method: &str, path: &str, body: Option<Value>| match client::request(
        &args.api_socket,
        method,
        path,
        body.as_ref(),
        wait,
    ) {
        Ok(reply) if reply.ok() => Ok(reply.body),
        Ok(reply) => Err(format!(
            "{} {path}: {}",
            reply.status,
            reply.fault().unwrap_or("no fault_message in the answer")
        )),
        Err(e) => Err(one_line(&e)),
    };
    let result = (|| {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        let (state, memory) = fennec::snapshot::files_in(&absolute(dir));
        let info = call("GET", "/", None)?.unwrap_or_default();
        let running = info["state"] == "Running";
        if running {
            call("PATCH", "/vm", Some(json!({"state": "Paused"})))?;
        }
        let created = call(
            "PUT",
            "/snapshot/create",
            Some(json!({"snapshot_type": "Full", "snapshot_path": state, "mem_file_path": memory})),
        );
        if running {
            call("PATCH", "/vm", Some(json!({"state": "Resumed"})))?;
        }
        created.map(|_| println!("{}", json!({"state": state, "memory": memory})))
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fennec ctl: {e}");
            ExitCode::FAILURE
        }
    }
}
