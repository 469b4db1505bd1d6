//! `fennec-agent`: the Linux test guest's agent, a static binary in its initramfs. The guest's
//! init starts `fennec-agent serve 1024` when the VM has a vsock device, and the harness
//! (`fennec::harness::TestVm::run`) runs commands through it: no console parsing. The other
//! modes are the guest's side of the vsock tests.
//!
//! The `host-*` modes are the host side of `resources/bench/linux-vsock.sh`, run in the test
//! host against fennec's Unix socket; the `tcp-*` modes move the same bytes the same way over
//! TCP (virtio-net), for its comparison.
//!
//! The command protocol, on one vsock stream per command: the host writes the command and
//! `\n`; the agent answers with frames, `o` + little-endian u32 length + that much output
//! (stdout and stderr together, as they come), and last `x` + 4 + the exit status as a
//! little-endian i32 (128 + the signal for a command a signal ended).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::process::{Command, ExitCode, Stdio};

use sha2::{Digest, Sha256};
use vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY};

const USAGE: &str = "usage: fennec-agent serve PORT | echo PORT | discard PORT | hash PORT CONNS \
                     | send CID PORT CONNS BYTES | connect CID PORT | wait-eof CID PORT \
                     | host-send UDS PORT BYTES | host-recv PATH | host-connect UDS PORT COUNT \
                     | tcp-discard PORT | tcp-send ADDR:PORT BYTES | tcp-recv PORT";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> u64 {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| die(USAGE))
    };
    let result = match args.first().map(String::as_str) {
        Some("serve") => listen(num(1) as u32, serve_command),
        Some("echo") => listen(num(1) as u32, echo),
        Some("send") => send(num(1) as u32, num(2) as u32, num(3) as usize, num(4)),
        Some("connect") => {
            match VsockStream::connect(&VsockAddr::new(num(1) as u32, num(2) as u32)) {
                Ok(_) => {
                    println!("connected");
                    Ok(())
                }
                Err(e) => {
                    println!("refused: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        Some("wait-eof") => wait_eof(num(1) as u32, num(2) as u32),
        Some("discard") => listen(num(1) as u32, discard),
        Some("hash") => hash(num(1) as u32, num(2) as usize),
        Some("host-send") => host::send(arg(&args, 1), num(2) as u32, num(3)),
        Some("host-recv") => host::recv(arg(&args, 1)),
        Some("host-connect") => host::connect_latency(arg(&args, 1), num(2) as u32, num(3)),
        Some("tcp-discard") => tcp::discard(num(1) as u16),
        Some("tcp-send") => tcp::send(arg(&args, 1), num(2)),
        Some("tcp-recv") => tcp::recv(num(1) as u16),
        _ => die(USAGE),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fennec-agent: {e}");
            ExitCode::from(2)
        }
    }
}

fn arg(args: &[String], i: usize) -> &str {
    args.get(i)
        .map(String::as_str)
        .unwrap_or_else(|| die(USAGE))
}

fn die(why: &str) -> ! {
    eprintln!("fennec-agent: {why}");
    std::process::exit(2)
}

/// Accepts connections on `port` for ever, each served on its own thread.
fn listen(port: u32, serve: fn(VsockStream) -> io::Result<()>) -> io::Result<()> {
    let listener = VsockListener::bind(&VsockAddr::new(VMADDR_CID_ANY, port))?;
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || {
            if let Err(e) = serve(stream) {
                eprintln!("fennec-agent: port {port}: {e}");
            }
        });
    }
    Ok(())
}

/// Runs one command line and streams its output and status back.
fn serve_command(stream: VsockStream) -> io::Result<()> {
    let mut line = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut line)?;
    let (mut out_r, out_w) = io::pipe()?;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(line.trim_end_matches('\n'))
        .stdin(Stdio::null())
        .stdout(out_w.try_clone()?)
        .stderr(out_w)
        .spawn()?;
    let mut stream = stream;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = out_r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        stream.write_all(b"o")?;
        stream.write_all(&(n as u32).to_le_bytes())?;
        stream.write_all(&buf[..n])?;
    }
    let status = child.wait()?;
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    });
    stream.write_all(b"x")?;
    stream.write_all(&4u32.to_le_bytes())?;
    stream.write_all(&code.to_le_bytes())?;
    stream.shutdown(Shutdown::Write)
}

/// Takes `conns` connections on `port` at once and reads each to its end, then closes it;
/// prints, per connection, `conn <SHA-256 of what came> <bytes>`.
fn hash(port: u32, conns: usize) -> io::Result<()> {
    let listener = VsockListener::bind(&VsockAddr::new(VMADDR_CID_ANY, port))?;
    let threads: Vec<_> = listener
        .incoming()
        .take(conns)
        .map(|stream| {
            std::thread::spawn(move || -> io::Result<String> {
                let mut stream = stream?;
                let mut hash = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                let mut total = 0u64;
                loop {
                    let n = stream.read(&mut buf)?;
                    if n == 0 {
                        return Ok(format!("conn {} {total}", hex(&hash.finalize())));
                    }
                    hash.update(&buf[..n]);
                    total += n as u64;
                }
            })
        })
        .collect();
    for t in threads {
        match t
            .join()
            .map_err(|_| io::Error::other("a connection panicked"))?
        {
            Ok(line) => println!("{line}"),
            Err(e) => println!("conn failed: {e}"),
        }
    }
    Ok(())
}

/// Reads everything to its end, then closes.
fn discard(mut stream: VsockStream) -> io::Result<()> {
    io::copy(&mut stream, &mut io::sink())?;
    Ok(())
}

/// Sends back everything it reads; at the reader's end, ends its own side.
fn echo(mut stream: VsockStream) -> io::Result<()> {
    let mut back = stream.try_clone()?;
    io::copy(&mut stream, &mut back)?;
    back.shutdown(Shutdown::Write)
}

/// `conns` connections to `cid:port` at once; each sends `bytes` of its own pseudo-random
/// stream, ends its sending side, and reads what comes back to the end. Prints, per
/// connection, the SHA-256 of what it sent and of what it got.
fn send(cid: u32, port: u32, conns: usize, bytes: u64) -> io::Result<()> {
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            std::thread::spawn(move || -> io::Result<String> {
                let stream = VsockStream::connect(&VsockAddr::new(cid, port))?;
                let mut reader = stream.try_clone()?;
                let got = std::thread::spawn(move || -> io::Result<(String, u64)> {
                    let mut hash = Sha256::new();
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut total = 0u64;
                    loop {
                        let n = reader.read(&mut buf)?;
                        if n == 0 {
                            return Ok((hex(&hash.finalize()), total));
                        }
                        hash.update(&buf[..n]);
                        total += n as u64;
                    }
                });
                let mut writer = stream;
                let mut hash = Sha256::new();
                let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64 + 1);
                let mut left = bytes;
                let mut buf = vec![0u8; 64 * 1024];
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    for chunk in buf[..n].chunks_mut(8) {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
                    }
                    writer.write_all(&buf[..n])?;
                    hash.update(&buf[..n]);
                    left -= n as u64;
                }
                writer.shutdown(Shutdown::Write)?;
                let (got, total) = got
                    .join()
                    .map_err(|_| io::Error::other("reader panicked"))??;
                Ok(format!(
                    "conn {i} sent {} got {got} {total}",
                    hex(&hash.finalize())
                ))
            })
        })
        .collect();
    let mut failed = false;
    for t in threads {
        match t
            .join()
            .map_err(|_| io::Error::other("a connection panicked"))?
        {
            Ok(line) => println!("{line}"),
            Err(e) => {
                println!("conn failed: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(io::Error::other("a connection failed"));
    }
    Ok(())
}

/// Connects, reads to the end, and says how much came.
fn wait_eof(cid: u32, port: u32) -> io::Result<()> {
    let mut stream = VsockStream::connect(&VsockAddr::new(cid, port))?;
    println!("connected");
    let mut sink = Vec::new();
    let n = stream.read_to_end(&mut sink)?;
    println!("eof after {n} bytes");
    Ok(())
}

/// Writes `bytes` zeros to `w`.
fn pour(w: &mut impl Write, bytes: u64) -> io::Result<()> {
    let buf = vec![0u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The host's side of the vsock benchmark, on fennec's Unix sockets.
mod host {
    use std::io::{self, Read, Write};
    use std::net::Shutdown;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::time::Instant;

    /// Connects to guest port `port` through `uds`: the stream after `OK <port>\n`.
    fn connect(uds: &str, port: u32) -> io::Result<UnixStream> {
        let mut s = UnixStream::connect(uds)?;
        s.write_all(format!("CONNECT {port}\n").as_bytes())?;
        let mut byte = [0u8; 1];
        let mut line = Vec::new();
        while s.read(&mut byte)? == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        if !line.starts_with(b"OK ") {
            return Err(io::Error::other("the guest refused the connection"));
        }
        Ok(s)
    }

    /// Sends `bytes` zeros to guest port `port` and waits for the guest to close: prints
    /// `ms <milliseconds>` from the connection's start.
    pub fn send(uds: &str, port: u32, bytes: u64) -> io::Result<()> {
        let start = Instant::now();
        let mut s = connect(uds, port)?;
        super::pour(&mut s, bytes)?;
        s.shutdown(Shutdown::Write)?;
        io::copy(&mut s, &mut io::sink())?;
        println!("ms {}", start.elapsed().as_millis());
        Ok(())
    }

    /// Listens at `path`, takes one connection, reads it to its end: prints `ms` and `bytes`
    /// from the connection's arrival.
    pub fn recv(path: &str) -> io::Result<()> {
        let listener = UnixListener::bind(path)?;
        let (mut s, _) = listener.accept()?;
        let start = Instant::now();
        let n = io::copy(&mut s, &mut io::sink())?;
        println!("ms {} bytes {n}", start.elapsed().as_millis());
        Ok(())
    }

    /// `count` connections one after another to guest port `port`, each closed once open:
    /// prints the median and the slowest time to `OK`, in microseconds.
    pub fn connect_latency(uds: &str, port: u32, count: u64) -> io::Result<()> {
        let mut times = Vec::new();
        for _ in 0..count {
            let start = Instant::now();
            let s = connect(uds, port)?;
            times.push(start.elapsed().as_micros());
            drop(s);
        }
        times.sort_unstable();
        let median = times.get(times.len() / 2).copied().unwrap_or_default();
        let max = times.last().copied().unwrap_or_default();
        println!("us median {median} max {max}");
        Ok(())
    }
}

/// The same transfers over TCP, timed the same way.
mod tcp {
    use std::io;
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::time::Instant;

    /// Reads each connection on `port` to its end, then closes it; for ever.
    pub fn discard(port: u16) -> io::Result<()> {
        let listener = TcpListener::bind(("0.0.0.0", port))?;
        for stream in listener.incoming() {
            let mut stream = stream?;
            std::thread::spawn(move || io::copy(&mut stream, &mut io::sink()));
        }
        Ok(())
    }

    /// Sends `bytes` zeros to `addr`, ends its side and waits for the other's close: prints
    /// `ms <milliseconds>` from the connection's start.
    pub fn send(addr: &str, bytes: u64) -> io::Result<()> {
        let start = Instant::now();
        let mut s = TcpStream::connect(addr)?;
        super::pour(&mut s, bytes)?;
        s.shutdown(Shutdown::Write)?;
        io::copy(&mut s, &mut io::sink())?;
        println!("ms {}", start.elapsed().as_millis());
        Ok(())
    }

    /// Takes one connection on `port` and reads it to its end: prints `ms` and `bytes` from
    /// the connection's arrival.
    pub fn recv(port: u16) -> io::Result<()> {
        let listener = TcpListener::bind(("0.0.0.0", port))?;
        let (mut s, _) = listener.accept()?;
        let start = Instant::now();
        let n = io::copy(&mut s, &mut io::sink())?;
        println!("ms {} bytes {n}", start.elapsed().as_millis());
        Ok(())
    }
}
