//! `fennec image`: templates and VM disks in a store (a directory, or ZFS datasets).

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use fennec::storage::{self, DiskRef, DiskStore, SnapRef, Target};

#[derive(Args)]
pub struct ImageArgs {
    /// The store: zfs:POOL/DATASET (datasets under it, driven with the zfs command),
    /// dir:/PATH or a directory path (raw image files). Default: $FENNEC_STORE, else
    /// dir:/var/lib/fennec/images.
    #[arg(long, global = true, value_name = "SPEC")]
    store: Option<String>,

    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Import a raw image file as a template (ZFS: PARENT/templates/NAME with snapshot @base).
    Import {
        /// The template's name.
        name: String,
        /// The raw image to import.
        file: PathBuf,
    },
    /// List templates, VM disks (with the template they came from) and snapshots.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Clone a template as a VM's disk (ZFS: an instant copy-on-write clone).
    Clone {
        /// The template.
        template: String,
        /// The new disk, as VM/DISK.
        disk: String,
    },
    /// Snapshot a disk that no VM is writing (for a running VM: `fennec ctl snapshot`).
    Snapshot {
        /// VM/DISK@SNAP.
        snapshot: String,
    },
    /// Return a disk to a snapshot (on ZFS, later snapshots are destroyed).
    Rollback {
        /// VM/DISK@SNAP.
        snapshot: String,
        /// Even while a VM has the disk open (it will see its disk change under it).
        #[arg(long)]
        force: bool,
    },
    /// Destroy a template (refused while disks come from it), a disk with its snapshots, or a
    /// snapshot.
    Destroy {
        /// NAME (a template), VM/DISK or VM/DISK@SNAP.
        target: String,
        /// Even while a VM has the disk open.
        #[arg(long)]
        force: bool,
    },
    /// Write a disk, snapshot or template as a stream (ZFS: `zfs send`; directory: the raw
    /// image) to a file or stdout.
    Send {
        /// VM/DISK (its current state), VM/DISK@SNAP, or a template NAME.
        source: String,
        /// Write here instead of stdout.
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// Create a disk from a stream written by `send` (ZFS: `zfs receive`), from a file or stdin.
    Receive {
        /// The new disk, as VM/DISK.
        disk: String,
        /// Read here instead of stdin.
        #[arg(short, long, value_name = "PATH")]
        input: Option<PathBuf>,
    },
    /// Print the image path of a disk, for --disk path=... or other tools.
    Path {
        /// VM/DISK.
        disk: String,
    },
}

/// A progress bar on stderr when it is a terminal.
fn progress_bar(total: u64) -> Option<indicatif::ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    Some(bar)
}

fn human(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}

fn print_table(entries: &[storage::Entry]) {
    let width = entries
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<width$}  {:<8}  {:>10}  {:>10}  ORIGIN",
        "NAME", "KIND", "SIZE", "USED"
    );
    for e in entries {
        let kind = serde_json::to_value(e.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        println!(
            "{:<width$}  {:<8}  {:>10}  {:>10}  {}",
            e.name,
            kind,
            human(e.size),
            human(e.used),
            e.origin.as_deref().unwrap_or("-")
        );
    }
}

fn execute(store: &dyn DiskStore, command: &ImageCommand) -> Result<(), String> {
    let err = |e: storage::StorageError| e.to_string();
    match command {
        ImageCommand::Import { name, file } => {
            let total = std::fs::metadata(file)
                .map_err(|e| format!("cannot use {}: {e}", file.display()))?
                .len();
            let bar = progress_bar(total);
            let started = std::time::Instant::now();
            let result = store.import_template(name, file, &mut |done| {
                if let Some(b) = &bar {
                    b.set_position(done);
                }
            });
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            result.map_err(err)?;
            eprintln!(
                "Imported {} ({}) as template {name:?} in {} ({:.1} s)",
                file.display(),
                human(total),
                store.spec(),
                started.elapsed().as_secs_f64()
            );
        }
        ImageCommand::List { json } => {
            let entries = store.list().map_err(err)?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&entries).map_err(|e| e.to_string())?
                );
            } else {
                print_table(&entries);
            }
        }
        ImageCommand::Clone { template, disk } => {
            let disk = DiskRef::parse(disk).map_err(err)?;
            let path = store.clone_template(template, &disk).map_err(err)?;
            println!("{}", path.display());
        }
        ImageCommand::Snapshot { snapshot } => {
            let snap = SnapRef::parse(snapshot).map_err(err)?;
            store.snapshot(&snap).map_err(err)?;
        }
        ImageCommand::Rollback { snapshot, force } => {
            let snap = SnapRef::parse(snapshot).map_err(err)?;
            store.rollback(&snap, *force).map_err(err)?;
        }
        ImageCommand::Destroy { target, force } => {
            let target = Target::parse(target).map_err(err)?;
            store.destroy(&target, *force).map_err(err)?;
        }
        ImageCommand::Send { source, output } => {
            let source = Target::parse(source).map_err(err)?;
            let mut out: Box<dyn Write> = match output {
                Some(path) => Box::new(
                    File::create(path)
                        .map_err(|e| format!("cannot create {}: {e}", path.display()))?,
                ),
                None if io::stdout().is_terminal() => {
                    return Err(
                        "refusing to write a stream to a terminal: use -o FILE or a pipe".into(),
                    )
                }
                None => Box::new(io::stdout().lock()),
            };
            let sent = store.send(&source, &mut out);
            if let (Err(_), Some(path)) = (&sent, output) {
                let _ = std::fs::remove_file(path);
            }
            let n = sent.map_err(err)?;
            log::info!("Sent {} of {}", human(n), store.spec());
        }
        ImageCommand::Receive { disk, input } => {
            let disk = DiskRef::parse(disk).map_err(err)?;
            let path = match input {
                Some(path) => {
                    let mut f = File::open(path)
                        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                    store.receive(&disk, &mut f)
                }
                None => store.receive(&disk, &mut io::stdin().lock()),
            }
            .map_err(err)?;
            println!("{}", path.display());
        }
        ImageCommand::Path { disk } => {
            let disk = DiskRef::parse(disk).map_err(err)?;
            println!("{}", store.disk_path(&disk).map_err(err)?.display());
        }
    }
    Ok(())
}

/// Runs `fennec image ...`.
pub fn image(args: &ImageArgs) -> ExitCode {
    let spec = storage::default_spec(args.store.as_deref());
    let result = storage::open(&spec)
        .map_err(|e| e.to_string())
        .and_then(|store| execute(store.as_ref(), &args.command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fennec image: {e}");
            ExitCode::FAILURE
        }
    }
}
