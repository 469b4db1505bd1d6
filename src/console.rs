//! The guest's console output, which must never make the guest (or the VMM) wait.
//!
//! The serial port hands every byte the guest writes to a [`Console`]'s output while a vCPU
//! is in the middle of a port write. Everything here takes that byte into a bounded buffer and
//! returns at once; when the buffer is full, or its reader is gone, the byte is refused and the
//! serial port counts it as lost (the serial metrics' `bytes_lost`). From the buffer the bytes go
//! either to a [`ConsoleStream`] the caller reads (the library's default), or to a writer (the
//! CLI's stdout) through a thread of its own ([`OutputPump`]), which alone may block on a slow
//! or stopped reader.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fennec_devices::legacy::serial::{ConsoleIn, ConsoleOut};

use crate::seccomp::Role;
use crate::threads;

/// The guest's console: where its serial output goes and where its input comes from.
pub struct Console {
    /// Receives every byte the guest writes to its serial port.
    pub output: ConsoleOut,
    /// Bytes to type into the guest's serial port; `None` for no input.
    pub input: Option<Box<dyn ConsoleIn>>,
}

/// How much guest output a [`ConsoleStream`] keeps for a reader that falls behind.
pub const STREAM_BUFFER: usize = 4 << 20;
/// How much guest output waits for a writer ([`OutputPump`]) that falls behind: a terminal
/// keeps up; a reader that stops (a pipe nobody reads, a paused pager) loses what comes after.
pub const PUMP_BUFFER: usize = 64 << 10;

/// Guest output waiting for a reader.
#[derive(Default)]
struct Output {
    bytes: VecDeque<u8>,
    /// The guest's side is gone: the VM ended.
    closed: bool,
    /// The reader's side is gone: nothing will read what comes.
    reader_gone: bool,
    /// Bytes a pump has written out so far.
    written: u64,
}

impl Output {
    /// Moves as many waiting bytes as fit into `buf`; returns how many.
    fn take(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.bytes.len());
        for (dst, src) in buf.iter_mut().zip(self.bytes.drain(..n)) {
            *dst = src;
        }
        n
    }
}

struct Shared {
    output: Mutex<Output>,
    ready: Condvar,
    capacity: usize,
}

impl Shared {
    fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Shared {
            output: Mutex::new(Output::default()),
            ready: Condvar::new(),
            capacity,
        })
    }

    /// Waits for output (or its end) until `deadline` (forever if `None`), then takes what
    /// fits in `buf`: 0 at the end, or when the time is up.
    fn read(&self, buf: &mut [u8], deadline: Option<Instant>) -> usize {
        let mut out = fennec_devices::lock(&self.output);
        loop {
            if !out.bytes.is_empty() || buf.is_empty() || out.closed {
                return out.take(buf);
            }
            out = match deadline {
                None => self.ready.wait(out).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return 0;
                    }
                    self.ready
                        .wait_timeout(out, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    fn reader_gone(&self) {
        let mut out = fennec_devices::lock(&self.output);
        out.reader_gone = true;
        out.bytes.clear();
    }
}

/// The guest's side: what the serial port writes to. Never blocks.
struct Sink {
    shared: Arc<Shared>,
    tee: Option<File>,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(f) = &mut self.tee {
            if let Err(e) = f.write_all(buf) {
                log::warn!("Console tee failed, no longer copying: {e}");
                self.tee = None;
            }
        }
        let mut out = fennec_devices::lock(&self.shared.output);
        if out.reader_gone {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let room = self.shared.capacity.saturating_sub(out.bytes.len());
        if room == 0 && !buf.is_empty() {
            // The reader fell behind: this byte is lost, and the serial port counts it.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = room.min(buf.len());
        out.bytes.extend(&buf[..n]);
        self.shared.ready.notify_all();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.tee {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        fennec_devices::lock(&self.shared.output).closed = true;
        self.shared.ready.notify_all();
    }
}

/// The guest's serial console as a byte stream: [`Read`] gives what the guest printed (and
/// end-of-file once the VM is gone), [`Write`] types into its serial port. The guest never
/// waits for the reader: past [`STREAM_BUFFER`] unread bytes, what the guest prints is lost
/// (and counted in the serial metrics' `bytes_lost`) until the reader catches up.
pub struct ConsoleStream {
    shared: Arc<Shared>,
    input: io::PipeWriter,
}

impl ConsoleStream {
    /// A stream and the [`Console`] to give the VM; the guest's output is also copied to `tee`.
    pub fn new(tee: Option<File>) -> io::Result<(Console, ConsoleStream)> {
        let (reader, writer) = io::pipe()?;
        let shared = Shared::new(STREAM_BUFFER);
        let console = Console {
            output: Box::new(Sink {
                shared: shared.clone(),
                tee,
            }),
            input: Some(Box::new(reader)),
        };
        Ok((
            console,
            ConsoleStream {
                shared,
                input: writer,
            },
        ))
    }

    /// Reads what is there, waiting up to `timeout` for something: `Ok(0)` at end of file or
    /// when the time is up with nothing to read (tell them apart with [`ConsoleStream::is_closed`]).
    pub fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        Ok(self.shared.read(buf, Some(Instant::now() + timeout)))
    }

    /// Whether the VM is gone and everything it printed has been read.
    pub fn is_closed(&self) -> bool {
        let out = fennec_devices::lock(&self.shared.output);
        out.closed && out.bytes.is_empty()
    }

    /// Splits off the input side, so one thread can read while another types.
    pub fn split(self) -> (ConsoleReader, io::PipeWriter) {
        (
            ConsoleReader {
                shared: self.shared,
            },
            self.input,
        )
    }
}

impl Read for ConsoleStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.shared.read(buf, None))
    }
}

impl Write for ConsoleStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.input.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.input.flush()
    }
}

/// The output half of a split [`ConsoleStream`].
pub struct ConsoleReader {
    shared: Arc<Shared>,
}

impl Read for ConsoleReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.shared.read(buf, None))
    }
}

/// The thread that writes a console's output to where it goes (see [`OutputPump::start`]).
pub struct OutputPump {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl OutputPump {
    /// A [`Console`] whose output a thread of its own writes to `out` (stdout, say), and whose
    /// input is `input`. Only that thread waits when `out` is slow; if `out` fails (its reader
    /// went away) the guest's output is dropped from then on.
    pub fn start(
        out: Box<dyn Write + Send>,
        input: Option<Box<dyn ConsoleIn>>,
    ) -> io::Result<(Console, OutputPump)> {
        let shared = Shared::new(PUMP_BUFFER);
        let pumped = shared.clone();
        let thread = threads::spawn(Role::Console, "console", move || pump(&pumped, out))?;
        let console = Console {
            output: Box::new(Sink {
                shared: shared.clone(),
                tee: None,
            }),
            input,
        };
        Ok((
            console,
            OutputPump {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Waits up to `timeout` for the output the VM left to be written (the VM has ended, so no
    /// more comes), and no longer than [`STALLED_WRITER`] while the writer makes no progress: a
    /// reader that stopped reading does not hold fennec up. What is left then is dropped.
    pub fn finish(mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let Some(thread) = self.thread.take() else {
            return;
        };
        let written = || fennec_devices::lock(&self.shared.output).written;
        let (mut last, mut progress_at) = (written(), Instant::now());
        while !thread.is_finished()
            && Instant::now() < deadline
            && progress_at.elapsed() < STALLED_WRITER
        {
            std::thread::sleep(Duration::from_millis(5));
            let now = written();
            if now != last {
                (last, progress_at) = (now, Instant::now());
            }
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            let left = fennec_devices::lock(&self.shared.output).bytes.len();
            log::warn!("Console output not written within {timeout:?}: {left} bytes dropped");
        }
    }
}

/// How long [`OutputPump::finish`] waits for a writer that makes no progress.
pub const STALLED_WRITER: Duration = Duration::from_millis(250);

fn pump(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = shared.read(&mut buf, None);
        if n == 0 {
            break;
        }
        if let Err(e) = out.write_all(&buf[..n]).and_then(|()| out.flush()) {
            log::info!("The console's reader is gone ({e}); dropping the guest's output");
            shared.reader_gone();
            break;
        }
        fennec_devices::lock(&shared.output).written += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(capacity: usize) -> (Sink, Arc<Shared>) {
        let shared = Shared::new(capacity);
        (
            Sink {
                shared: shared.clone(),
                tee: None,
            },
            shared,
        )
    }

    #[test]
    fn test_sink_full_buffer_refuses_bytes_without_blocking() {
        let (mut sink, shared) = sink(4);
        assert_eq!(sink.write(b"abc").unwrap(), 3);
        assert_eq!(sink.write(b"de").unwrap(), 1);
        let err = sink.write(b"f").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let mut buf = [0u8; 8];
        assert_eq!(shared.read(&mut buf, None), 4);
        assert_eq!(&buf[..4], b"abcd");
        assert_eq!(sink.write(b"g").unwrap(), 1);
    }

    #[test]
    fn test_sink_reader_gone_refuses_everything() {
        let (mut sink, shared) = sink(4);
        shared.reader_gone();
        assert_eq!(
            sink.write(b"a").unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }

    #[test]
    fn test_read_after_the_guest_side_closed_drains_then_ends() {
        let (mut sink, shared) = sink(16);
        sink.write_all(b"bye").unwrap();
        drop(sink);
        let mut buf = [0u8; 8];
        assert_eq!(shared.read(&mut buf, None), 3);
        assert_eq!(shared.read(&mut buf, None), 0);
    }

    #[test]
    fn test_pump_writes_everything_then_finishes() {
        let (reader, writer) = io::pipe().unwrap();
        let (mut console, pump) = OutputPump::start(Box::new(writer), None).unwrap();
        console.output.write_all(b"hello, pump").unwrap();
        drop(console);
        pump.finish(Duration::from_secs(5));
        let mut got = String::new();
        let mut reader = reader;
        reader.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello, pump");
    }
}
