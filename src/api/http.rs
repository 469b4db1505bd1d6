//! The HTTP side of the control socket: a Unix socket, a thread per connection, `httparse`.
//!
//! Each complete request is routed ([`super::routes::route`]) and, if it makes sense, sent as
//! an [`ApiCall`] to the thread that serves the VM; the connection thread waits for the answer
//! and writes it. Requests on one connection are answered in order (keep-alive and pipelining
//! work); a slow, silent or vanished client holds only its own thread, and only for a bounded
//! time.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::seccomp::Role;
use crate::threads;

use super::{routes, ApiError, ApiResponse};
use super::{ApiCall, Event};

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// Most headers in one request.
const MAX_HEADERS: usize = 32;
/// Connections served at once; more are answered 503 and closed.
const MAX_CONNECTIONS: usize = 32;
/// How long a connection may sit idle between requests: short, so that clients that open
/// connections and say nothing cannot hold every slot for long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a whole request once it started.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to take an answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors setting up the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Something that is not a socket is in the way.
    #[error("{0} exists and is not a socket; remove it or choose another path")]
    NotASocket(PathBuf),
    /// A live process serves the path.
    #[error("{0} is in use by a running process (another fennec?)")]
    InUse(PathBuf),
    /// Creating, binding or moving the socket failed.
    #[error("Cannot create the control socket {path}")]
    Bind {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The control socket. Dropping it removes the socket file.
pub struct ApiServer {
    path: PathBuf,
    in_flight: Arc<AtomicUsize>,
}

impl ApiServer {
    /// Creates the socket at `path` with mode 0600 and serves it on a thread of its own,
    /// sending each request to `calls` as an [`Event::Call`]. A socket left by a dead process is replaced; a live
    /// one, or a path that is not a socket, is refused.
    pub fn start(path: &Path, calls: mpsc::Sender<Event>) -> Result<Self, ServerError> {
        Self::start_with_limit(path, calls, MAX_BODY)
    }

    /// [`ApiServer::start`] taking request bodies of at most `max_body` bytes (Firecracker's
    /// `--http-api-max-payload-size`).
    pub fn start_with_limit(
        path: &Path,
        calls: mpsc::Sender<Event>,
        max_body: usize,
    ) -> Result<Self, ServerError> {
        let listener = bind(path)?;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let counter = in_flight.clone();
        let spawned = threads::spawn(Role::Api, "api", move || {
            accept_loop(listener, calls, counter, max_body)
        });
        if let Err(source) = spawned {
            let _ = fs::remove_file(path);
            return Err(ServerError::Bind {
                path: path.to_path_buf(),
                source,
            });
        }
        log::info!("Control socket listening on {}", path.display());
        Ok(ApiServer {
            path: path.to_path_buf(),
            in_flight,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `timeout` for answers still being written (say, to the `Stop` that ended
    /// the VM) before the process exits.
    pub fn drain(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            log::warn!(
                "Cannot remove the control socket {}: {e}",
                self.path.display()
            );
        }
    }
}

/// Binds `path` with mode 0600 and no window in which it has another: the socket is made in a
/// private directory beside `path`, chmodded, then renamed into place.
fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let bind_err = |source| ServerError::Bind {
        path: path.to_path_buf(),
        source,
    };
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ServerError::NotASocket(path.to_path_buf()))
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => return Err(ServerError::InUse(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                log::info!("Replacing the stale control socket {}", path.display());
                fs::remove_file(path).map_err(bind_err)?;
            }
            Err(e) => return Err(bind_err(e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let private = tempfile::Builder::new()
        .prefix(".fennec-api-")
        .tempdir_in(parent)
        .map_err(bind_err)?;
    let staged = private.path().join("s");
    let listener = UnixListener::bind(&staged).map_err(bind_err)?;
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    fs::rename(&staged, path).map_err(bind_err)?;
    Ok(listener)
}

fn accept_loop(
    listener: UnixListener,
    calls: mpsc::Sender<Event>,
    in_flight: Arc<AtomicUsize>,
    max_body: usize,
) {
    let connections = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log::warn!("Control socket: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            connections.fetch_sub(1, Ordering::SeqCst);
            let err = ApiError {
                status: 503,
                message: format!("Too many connections (at most {MAX_CONNECTIONS})"),
            };
            let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
            let _ = write_response(&mut stream, &Err(err), false);
            continue;
        }
        let slot = Slot(connections.clone());
        let (calls, in_flight) = (calls.clone(), in_flight.clone());
        let spawned = threads::spawn(Role::Api, "api-conn", move || {
            let _slot = slot;
            Connection {
                stream,
                max_body,
                buf: Vec::new(),
                calls,
                in_flight,
            }
            .serve();
        });
        if let Err(e) = spawned {
            log::warn!("Control socket: cannot start a connection thread: {e}");
        }
    }
}

/// One of the [`MAX_CONNECTIONS`] slots, given back when dropped: when its connection ends,
/// when the connection's thread panics, and when that thread could not even start.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One parsed request.
struct Request {
    method: String,
    target: String,
    body: Vec<u8>,
    keep_alive: bool,
}

/// Why a connection stops reading requests.
enum ReadError {
    /// The client closed or went quiet; nothing to answer.
    Gone,
    /// The request is unacceptable; answer, then close.
    Reject(ApiError),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        log::debug!("Control socket: connection ended: {e}");
        ReadError::Gone
    }
}

fn reject(status: u16, message: impl Into<String>) -> ReadError {
    ReadError::Reject(ApiError {
        status,
        message: message.into(),
    })
}

struct Connection {
    stream: UnixStream,
    /// The largest request body taken.
    max_body: usize,
    /// Bytes read and not yet consumed (the start of a pipelined request).
    buf: Vec<u8>,
    calls: mpsc::Sender<Event>,
    in_flight: Arc<AtomicUsize>,
}

impl Connection {
    fn serve(mut self) {
        if self.stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err() {
            return;
        }
        loop {
            let request = match self.read_request() {
                Ok(r) => r,
                Err(ReadError::Gone) => return,
                Err(ReadError::Reject(e)) => {
                    log::debug!("Control socket: rejected a request: {e}");
                    let _ = write_response(&mut self.stream, &Err(e), false);
                    return;
                }
            };
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let answer = self.dispatch(&request);
            super::sinks::count_api_request(&request.method, &request.target, answer.is_err());
            let written = write_response(&mut self.stream, &answer, request.keep_alive);
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if written.is_err() || !request.keep_alive {
                return;
            }
        }
    }

    fn dispatch(&self, request: &Request) -> Result<ApiResponse, ApiError> {
        let routed = routes::route(&request.method, &request.target, &request.body)?;
        log::debug!("API: {} {}", request.method, request.target);
        let (reply, answer) = mpsc::channel();
        let gone = || ApiError {
            status: 503,
            message: "The VMM is shutting down".into(),
        };
        self.calls
            .send(Event::Call(Box::new(ApiCall {
                request: routed,
                reply,
            })))
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }

    /// Reads more bytes into `buf`, waiting no later than `deadline`; `Gone` on EOF.
    fn fill(&mut self, deadline: Instant) -> Result<(), ReadError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(reject(408, "The request took too long to arrive"));
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(ReadError::Gone),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if self.buf.is_empty() {
                    Err(ReadError::Gone)
                } else {
                    Err(reject(408, "The request took too long to arrive"))
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn read_request(&mut self) -> Result<Request, ReadError> {
        if self.buf.is_empty() {
            self.fill(Instant::now() + IDLE_TIMEOUT)?;
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let (head_len, mut request, length) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Request::new(&mut headers);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let (request, length) = head(&parsed, self.max_body)?;
                    break (n, request, length);
                }
                Ok(httparse::Status::Partial) if self.buf.len() >= MAX_HEAD => {
                    return Err(reject(431, format!("Request head over {MAX_HEAD} bytes")))
                }
                Ok(httparse::Status::Partial) => self.fill(deadline)?,
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(reject(431, format!("More than {MAX_HEADERS} headers")))
                }
                Err(e) => return Err(reject(400, format!("Malformed HTTP request: {e}"))),
            }
        };
        if length.expect_continue {
            self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        while self.buf.len() < head_len + length.bytes {
            self.fill(deadline)?;
        }
        request.body = self.buf[head_len..head_len + length.bytes].to_vec();
        self.buf.drain(..head_len + length.bytes);
        Ok(request)
    }
}

/// What the head says about the body.
struct BodyLength {
    bytes: usize,
    expect_continue: bool,
}

fn head(
    parsed: &httparse::Request<'_, '_>,
    max_body: usize,
) -> Result<(Request, BodyLength), ReadError> {
    let mut length = BodyLength {
        bytes: 0,
        expect_continue: false,
    };
    let mut keep_alive = parsed.version == Some(1);
    for h in parsed.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| reject(400, format!("Header {} is not UTF-8", h.name)))?
            .trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            length.bytes = value
                .parse()
                .map_err(|_| reject(400, format!("Bad Content-Length {value:?}")))?;
            if length.bytes > max_body {
                return Err(reject(
                    413,
                    format!("Request body of {} bytes; at most {max_body}", length.bytes),
                ));
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(reject(
                411,
                "Transfer-Encoding is not supported; send a Content-Length",
            ));
        } else if h.name.eq_ignore_ascii_case("expect") {
            length.expect_continue = value.eq_ignore_ascii_case("100-continue");
        } else if h.name.eq_ignore_ascii_case("connection") {
            keep_alive = match value.to_ascii_lowercase().as_str() {
                "close" => false,
                "keep-alive" => true,
                _ => keep_alive,
            };
        }
    }
    let request = Request {
        method: parsed.method.unwrap_or_default().to_string(),
        target: parsed.path.unwrap_or_default().to_string(),
        body: Vec::new(),
        keep_alive,
    };
    Ok((request, length))
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn write_response(
    stream: &mut UnixStream,
    answer: &Result<ApiResponse, ApiError>,
    keep_alive: bool,
) -> io::Result<()> {
    let (status, body) = match answer {
        Ok(ApiResponse::Empty) => (204, None),
        Ok(ApiResponse::Json(v)) => (200, Some(v.to_string())),
        Err(e) => (e.status, Some(e.body().to_string())),
    };
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nServer: fennec\r\n",
        reason_phrase(status)
    );
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    }
    if let Some(body) = &body {
        out.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    out.push_str("\r\n");
    if let Some(body) = body {
        out.push_str(&body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()
}
