//! The guest's side of the metadata service: HTTP/1.1 requests as they arrive on a
//! connection, and their answers.
//!
//! - `PUT /latest/api/token` with `X-metadata-token-ttl-seconds: N` (1 to 21600) opens a
//!   session and answers its token. A request that carries `X-Forwarded-For` is refused, so a
//!   proxy in the guest cannot hand out sessions.
//! - `GET /path` answers the document's value at that path. With V2 it needs
//!   `X-metadata-token` naming a live session (else 401). With `Accept: application/json` the
//!   value is JSON; otherwise it is the IMDS format: an object's keys a line each (a key whose
//!   value is an object ends in `/`), a string as it is, a number or boolean as its text.
//! - Any other method is 405. A request the parser cannot take is 400 and ends the connection.
//!
//! Everything here treats the bytes as hostile: requests are bounded ([`MAX_REQUEST`]), the
//! sessions too ([`MAX_SESSIONS`]), and nothing panics on any input.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::config::MmdsVersion;

/// The most bytes a request (head and body) may have.
pub(super) const MAX_REQUEST: usize = 8192;
/// The longest session a token may ask for (Firecracker's limit: six hours).
const MAX_TTL_SECONDS: u64 = 21_600;
/// Live sessions at most; beyond it the one closest to its end goes first.
const MAX_SESSIONS: usize = 1024;
const TOKEN_PATH: &str = "/latest/api/token";

/// One parsed request: what answering it needs.
#[derive(Debug, Default)]
pub(super) struct Request {
    method: String,
    path: String,
    token: Option<String>,
    ttl: Option<String>,
    forwarded: bool,
    json: bool,
    /// The client asked to close the connection after this answer.
    pub(super) close: bool,
}

/// What [`parse`] found at the start of a connection's buffer.
#[derive(Debug)]
pub(super) enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// A request, and how many bytes it took.
    Complete(Request, usize),
    /// Not a request this service takes: answer this and close.
    Invalid(Response),
}

/// Parses the request at the start of `buf`.
pub(super) fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => return Parsed::Incomplete,
        Ok(httparse::Status::Partial) => {
            return Parsed::Invalid(Response::text(400, "The request is too large."))
        }
        Err(e) => return Parsed::Invalid(Response::text(400, &format!("Bad request: {e}."))),
    };
    let mut request = Request {
        method: req.method.unwrap_or_default().to_string(),
        path: req.path.unwrap_or_default().to_string(),
        close: req.version == Some(0),
        ..Request::default()
    };
    let mut body_len = 0usize;
    for h in req.headers.iter() {
        let value = || String::from_utf8_lossy(h.value).trim().to_string();
        match h.name.to_ascii_lowercase().as_str() {
            "x-metadata-token" => request.token = Some(value()),
            "x-metadata-token-ttl-seconds" => request.ttl = Some(value()),
            "x-forwarded-for" => request.forwarded = true,
            "accept" => request.json = value().contains("application/json"),
            "connection" => request.close = value().eq_ignore_ascii_case("close"),
            "content-length" => match value().parse::<usize>() {
                Ok(n) if n <= MAX_REQUEST => body_len = n,
                _ => {
                    return Parsed::Invalid(Response::text(400, "Bad Content-Length."));
                }
            },
            "transfer-encoding" => {
                return Parsed::Invalid(Response::text(400, "Chunked bodies are not accepted."))
            }
            _ => {}
        }
    }
    let total = head_len + body_len;
    if total > MAX_REQUEST {
        return Parsed::Invalid(Response::text(400, "The request is too large."));
    }
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    Parsed::Complete(request, total)
}

/// An answer.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Response {
    pub(super) status: u16,
    content_type: &'static str,
    allow: bool,
    pub(super) body: Vec<u8>,
}

impl Response {
    fn text(status: u16, body: &str) -> Self {
        Response {
            status,
            content_type: "text/plain",
            allow: false,
            body: body.as_bytes().to_vec(),
        }
    }

    /// The bytes on the wire; `close` adds `Connection: close`.
    pub(super) fn to_bytes(&self, close: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Internal Server Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nServer: fennec\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if self.allow {
            out.push_str("Allow: GET, PUT\r\n");
        }
        if close {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// The V2 sessions: token to end of life.
#[derive(Debug, Default)]
pub(super) struct Tokens {
    live: HashMap<String, Instant>,
}

impl Tokens {
    fn issue(&mut self, ttl: Duration, now: Instant) -> Option<String> {
        let mut bytes = [0u8; 32];
        crate::random::fill(&mut bytes).ok()?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if self.live.len() >= MAX_SESSIONS {
            self.live.retain(|_, end| *end > now);
        }
        if self.live.len() >= MAX_SESSIONS {
            let soonest = self
                .live
                .iter()
                .min_by_key(|(_, end)| **end)
                .map(|(t, _)| t.clone());
            if let Some(t) = soonest {
                self.live.remove(&t);
            }
        }
        self.live.insert(token.clone(), now + ttl);
        Some(token)
    }

    fn valid(&mut self, token: &str, now: Instant) -> bool {
        match self.live.get(token) {
            Some(end) if *end > now => true,
            Some(_) => {
                self.live.remove(token);
                false
            }
            None => false,
        }
    }
}

/// Answers `request` from `data`.
pub(super) fn answer(
    data: &Value,
    version: MmdsVersion,
    tokens: &mut Tokens,
    request: &Request,
) -> Response {
    answer_at(data, version, tokens, request, Instant::now())
}

fn answer_at(
    data: &Value,
    version: MmdsVersion,
    tokens: &mut Tokens,
    request: &Request,
    now: Instant,
) -> Response {
    let path = request.path.split('?').next().unwrap_or_default();
    match request.method.as_str() {
        "PUT" if path == TOKEN_PATH => {
            if request.forwarded {
                return Response::text(400, "Token requests may not carry X-Forwarded-For.");
            }
            let ttl = match request.ttl.as_deref().map(str::parse::<u64>) {
                Some(Ok(n)) if (1..=MAX_TTL_SECONDS).contains(&n) => n,
                Some(_) => {
                    return Response::text(
                        400,
                        &format!(
                            "X-metadata-token-ttl-seconds must be a number of seconds from 1 \
                             to {MAX_TTL_SECONDS}."
                        ),
                    )
                }
                None => {
                    return Response::text(
                        400,
                        "Token requests need the X-metadata-token-ttl-seconds header.",
                    )
                }
            };
            match tokens.issue(Duration::from_secs(ttl), now) {
                Some(token) => Response::text(200, &token),
                None => Response::text(500, "No randomness for a token."),
            }
        }
        "GET" => {
            if version == MmdsVersion::V2 {
                match request.token.as_deref() {
                    None => {
                        return Response::text(
                            401,
                            "No MMDS token provided. Get one with PUT /latest/api/token and \
                             send it in the X-metadata-token header.",
                        )
                    }
                    Some(t) if !tokens.valid(t, now) => {
                        return Response::text(401, "MMDS token not valid.")
                    }
                    Some(_) => {}
                }
            }
            lookup(data, path, request.json)
        }
        _ => Response {
            allow: true,
            ..Response::text(405, "Not allowed: the metadata service takes GET and PUT.")
        },
    }
}

/// The value at `path`, in JSON or the IMDS format.
fn lookup(data: &Value, path: &str, json: bool) -> Response {
    let not_found = || Response::text(404, &format!("Resource not found: {path}."));
    if !path.starts_with('/') {
        return not_found();
    }
    let pointer = path.trim_end_matches('/');
    let Some(value) = data.pointer(pointer) else {
        return not_found();
    };
    if json {
        return Response {
            content_type: "application/json",
            ..Response::text(200, &value.to_string())
        };
    }
    match value {
        Value::Object(map) => {
            let keys: Vec<String> = map
                .iter()
                .map(|(k, v)| match v.is_object() {
                    true => format!("{k}/"),
                    false => k.clone(),
                })
                .collect();
            Response::text(200, &keys.join("\n"))
        }
        Value::String(s) => Response::text(200, s),
        Value::Number(_) | Value::Bool(_) => Response::text(200, &value.to_string()),
        Value::Array(_) | Value::Null => Response::text(
            400,
            &format!(
                "The value at {path} is not an object, string, number or boolean; ask for it \
                 with Accept: application/json."
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(raw: &str) -> Request {
        match parse(raw.as_bytes()) {
            Parsed::Complete(r, n) => {
                assert_eq!(n, raw.len());
                r
            }
            other => panic!("{other:?}"),
        }
    }

    fn doc() -> Value {
        json!({"latest": {"meta-data": {"ami-id": "ami-1", "count": 3, "list": [1],
               "placement": {"zone": "z1"}}}})
    }

    fn ask(version: MmdsVersion, tokens: &mut Tokens, raw: &str) -> (u16, String) {
        let r = answer(&doc(), version, tokens, &request(raw));
        (r.status, String::from_utf8(r.body).unwrap())
    }

    #[test]
    fn test_guest_http_v1_imds_and_json_formats() {
        let mut t = Tokens::default();
        let v1 = MmdsVersion::V1;
        assert_eq!(
            ask(v1, &mut t, "GET /latest/meta-data/ HTTP/1.1\r\n\r\n"),
            (200, "ami-id\ncount\nlist\nplacement/".into())
        );
        assert_eq!(
            ask(v1, &mut t, "GET /latest/meta-data/ami-id HTTP/1.1\r\n\r\n"),
            (200, "ami-1".into())
        );
        assert_eq!(
            ask(v1, &mut t, "GET /latest/meta-data/count HTTP/1.1\r\n\r\n"),
            (200, "3".into())
        );
        assert_eq!(
            ask(v1, &mut t, "GET /latest/meta-data/list HTTP/1.1\r\n\r\n").0,
            400
        );
        let json = "GET /latest/meta-data/placement HTTP/1.1\r\nAccept: application/json\r\n\r\n";
        assert_eq!(ask(v1, &mut t, json), (200, r#"{"zone":"z1"}"#.into()));
        assert_eq!(ask(v1, &mut t, "GET /latest/nope HTTP/1.1\r\n\r\n").0, 404);
        assert_eq!(ask(v1, &mut t, "DELETE / HTTP/1.1\r\n\r\n").0, 405);
    }

    #[test]
    fn test_guest_http_v2_needs_a_live_token() {
        let mut t = Tokens::default();
        let v2 = MmdsVersion::V2;
        let get = "GET /latest/meta-data/ami-id HTTP/1.1\r\n\r\n";
        assert_eq!(ask(v2, &mut t, get).0, 401);
        let (status, token) = ask(
            v2,
            &mut t,
            "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n",
        );
        assert_eq!((status, token.len()), (200, 64));
        let with =
            format!("GET /latest/meta-data/ami-id HTTP/1.1\r\nX-metadata-token: {token}\r\n\r\n");
        assert_eq!(ask(v2, &mut t, &with), (200, "ami-1".into()));
        let wrong = "GET /latest/meta-data/ami-id HTTP/1.1\r\nX-metadata-token: abc\r\n\r\n";
        assert_eq!(ask(v2, &mut t, wrong).0, 401);
        // An expired token is refused.
        let later = Instant::now() + Duration::from_secs(61);
        let r = answer_at(&doc(), v2, &mut t, &request(&with), later);
        assert_eq!(r.status, 401);
    }

    #[test]
    fn test_guest_http_token_requests_checked() {
        let mut t = Tokens::default();
        for bad in [
            "PUT /latest/api/token HTTP/1.1\r\n\r\n",
            "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 0\r\n\r\n",
            "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 21601\r\n\r\n",
            "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: x\r\n\r\n",
            "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 5\r\n\
             X-Forwarded-For: 10.0.0.1\r\n\r\n",
        ] {
            assert_eq!(ask(MmdsVersion::V2, &mut t, bad).0, 400, "{bad}");
        }
        assert_eq!(
            ask(MmdsVersion::V2, &mut t, "PUT /x HTTP/1.1\r\n\r\n").0,
            405
        );
        assert!(t.live.is_empty());
    }

    #[test]
    fn test_guest_http_sessions_are_bounded() {
        let mut t = Tokens::default();
        let now = Instant::now();
        for i in 0..MAX_SESSIONS + 10 {
            t.issue(Duration::from_secs(10 + i as u64), now).unwrap();
        }
        assert_eq!(t.live.len(), MAX_SESSIONS);
    }

    #[test]
    fn test_guest_http_parse_bounds_and_pieces() {
        assert!(matches!(parse(b"GET / HT"), Parsed::Incomplete));
        let body = "PUT /latest/api/token HTTP/1.1\r\nContent-Length: 4\r\n\r\nab";
        assert!(matches!(parse(body.as_bytes()), Parsed::Incomplete));
        let two = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        match parse(two.as_bytes()) {
            Parsed::Complete(r, n) => assert_eq!((r.path.as_str(), n), ("/a", 19)),
            other => panic!("{other:?}"),
        }
        let huge = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_REQUEST));
        assert!(matches!(parse(huge.as_bytes()), Parsed::Invalid(_)));
        for bad in [
            "\x00\x01\x02 garbage\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad.as_bytes()), Parsed::Invalid(_)),
                "{bad:?}"
            );
        }
        assert!(request("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").close);
        assert!(request("GET / HTTP/1.0\r\n\r\n").close);
    }

    proptest::proptest! {
        /// No bytes panic the parser or the answer.
        #[test]
        fn test_guest_http_arbitrary_bytes_never_panic(
            raw in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
        ) {
            if let Parsed::Complete(r, n) = parse(&raw) {
                proptest::prop_assert!(n <= raw.len());
                let _ = answer(&doc(), MmdsVersion::V2, &mut Tokens::default(), &r);
            }
        }
    }
}
