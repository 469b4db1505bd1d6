//! A client for the control socket, behind `fennec ctl`: one request per connection.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Errors talking to a control socket.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody listens there.
    #[error("Cannot connect to {path} (is fennec running with --api-socket there?)")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The connection failed.
    #[error("The control socket connection failed")]
    Io(#[from] io::Error),
    /// The answer is not HTTP.
    #[error("The control socket sent a malformed answer: {0}")]
    BadResponse(String),
}

/// An answer: status and JSON body, if any.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body, parsed.
    pub body: Option<Value>,
}

impl Reply {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `fault_message` of an error answer.
    pub fn fault(&self) -> Option<&str> {
        self.body.as_ref()?.get("fault_message")?.as_str()
    }
}

/// Sends `method target` with `body` to the socket at `socket` and reads the answer, waiting at
/// most `timeout` for it.
pub fn request(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut out = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if !body.is_empty() {
        out.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    stream.write_all(out.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Result<Reply, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(ClientError::BadResponse("the answer ended early".into()))
        }
        Err(e) => return Err(ClientError::BadResponse(e.to_string())),
    };
    let status = response.code.unwrap_or_default();
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let body = match length {
        Some(0) | None if raw.len() == head => None,
        Some(n) => Some(raw.get(head..head + n).ok_or_else(|| {
            ClientError::BadResponse("the body is shorter than its Content-Length".into())
        })?),
        None => Some(&raw[head..]),
    };
    let body = body
        .map(|b| {
            serde_json::from_slice(b)
                .map_err(|e| ClientError::BadResponse(format!("the body is not JSON: {e}")))
        })
        .transpose()?;
    Ok(Reply { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_reply_json_and_empty() {
        let r = parse_reply(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 22\r\n\r\n{\"fault_message\":\"no\"}",
        )
        .unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(r.fault(), Some("no"));
        let r = parse_reply(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert!(r.ok() && r.body.is_none());
    }

    #[test]
    fn test_parse_reply_garbage_is_an_error() {
        assert!(parse_reply(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}").is_err());
    }
}
