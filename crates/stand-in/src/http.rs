//! Just enough HTTP/1.1: reading requests with Content-Length bodies off a keep-alive
//! connection, and writing response heads.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::behavior::{reason_phrase, Response};

/// Larger request heads are refused with 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Larger request bodies are refused with 413 (the real body is empty or `{}`).
const MAX_BODY_BYTES: u64 = 1024 * 1024;
const MAX_HEADERS: usize = 64;

/// A request as the stand-in received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// Query parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    /// Header names lower-cased, values as sent, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Which TCP connection carried the request (1, 2, ... per stand-in): equal ids mean the
    /// client reused a connection.
    pub connection_id: u64,
}

impl RecordedRequest {
    /// The first value of a header; `name` is matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The `X-Company-ID` header.
    pub fn company_id(&self) -> Option<&str> {
        self.header("x-company-id")
    }

    /// The first value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// What came in on the connection.
pub(crate) enum Incoming {
    Request {
        request: RecordedRequest,
        keep_alive: bool,
    },
    /// A request this server will not handle.
    Refused(Refusal),
    /// The client closed the connection (possibly mid-request).
    Closed,
}

/// Answer `status` with `message`, then close: the request cannot be handled.
pub(crate) struct Refusal {
    pub status: u16,
    pub message: &'static str,
}

/// Reads the next request from `stream`; `buffer` carries bytes read past the previous request
/// (pipelining) and must be kept between calls on the same connection.
pub(crate) async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut Vec<u8>,
    connection_id: u64,
) -> io::Result<Incoming> {
    let (head, head_len) = loop {
        if !buffer.is_empty() {
            match parse_head(buffer) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) if buffer.len() > MAX_HEAD_BYTES => {
                    return Ok(refused(431, "Request header fields too large"))
                }
                Ok(None) => {}
                Err(refusal) => return Ok(Incoming::Refused(refusal)),
            }
        }
        if read_more(stream, buffer).await? == 0 {
            return Ok(Incoming::Closed);
        }
    };
    buffer.drain(..head_len);

    if head
        .headers
        .iter()
        .any(|(name, _)| name == "transfer-encoding")
    {
        return Ok(refused(
            411,
            "Chunked request bodies are not supported: send Content-Length",
        ));
    }
    let mut lengths = head
        .headers
        .iter()
        .filter(|(name, _)| name == "content-length")
        .map(|(_, value)| value.trim().parse::<u64>());
    let body_len = match (lengths.next(), lengths.next()) {
        (None, _) => 0,
        (Some(Ok(len)), None) => len,
        _ => return Ok(refused(400, "Invalid Content-Length")),
    };
    if body_len > MAX_BODY_BYTES {
        return Ok(refused(413, "Request body too large"));
    }
    let body_len = body_len as usize;
    while buffer.len() < body_len {
        if read_more(stream, buffer).await? == 0 {
            return Ok(Incoming::Closed);
        }
    }
    let body = buffer.drain(..body_len).collect();

    let keep_alive = keeps_alive(head.minor_version, &head.headers);
    Ok(Incoming::Request {
        request: RecordedRequest {
            method: head.method,
            path: head.path,
            query: head.query,
            headers: head.headers,
            body,
            connection_id,
        },
        keep_alive,
    })
}

fn refused(status: u16, message: &'static str) -> Incoming {
    Incoming::Refused(Refusal { status, message })
}

/// Reads what is there into `buffer`; 0 when the client closed the connection.
pub(crate) async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut Vec<u8>,
) -> io::Result<usize> {
    if buffer.capacity() - buffer.len() < 4096 {
        buffer.reserve(8192);
    }
    stream.read_buf(buffer).await
}

struct Head {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    minor_version: u8,
}

/// The request head at the start of `buffer` and its length, or `None` if incomplete.
fn parse_head(buffer: &[u8]) -> Result<Option<(Head, usize)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buffer) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal {
                status: 431,
                message: "Too many headers",
            })
        }
        Err(_) => {
            return Err(Refusal {
                status: 400,
                message: "Malformed request",
            })
        }
    };
    // A complete parse always has method, path and version.
    let (Some(method), Some(target), Some(minor_version)) =
        (request.method, request.path, request.version)
    else {
        return Err(Refusal {
            status: 400,
            message: "Malformed request",
        });
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, parse_query(query)),
        None => (target, Vec::new()),
    };
    let headers = request
        .headers
        .iter()
        .map(|header| {
            (
                header.name.to_ascii_lowercase(),
                String::from_utf8_lossy(header.value).into_owned(),
            )
        })
        .collect();
    Ok(Some((
        Head {
            method: method.to_owned(),
            path: path.to_owned(),
            query,
            headers,
            minor_version,
        },
        head_len,
    )))
}

fn keeps_alive(minor_version: u8, headers: &[(String, String)]) -> bool {
    let has_token = |token: &str| {
        headers
            .iter()
            .filter(|(name, _)| name == "connection")
            .flat_map(|(_, value)| value.split(','))
            .any(|value| value.trim().eq_ignore_ascii_case(token))
    };
    if minor_version == 0 {
        has_token("keep-alive")
    } else {
        !has_token("close")
    }
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (space); malformed escapes are kept as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (b'+', None) => {
                decoded.push(b' ');
                i += 1;
            }
            (byte, None) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Appends a response head to `out`.
pub(crate) fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    content_length: u64,
    headers: &[(String, String)],
    keep_alive: bool,
) {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {content_length}\r\nConnection: {connection}\r\n",
            reason_phrase(status)
        )
        .as_bytes(),
    );
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a complete response to `out`.
pub(crate) fn write_response(out: &mut Vec<u8>, response: &Response, keep_alive: bool) {
    write_head(
        out,
        response.status,
        &response.content_type,
        response.body.len() as u64,
        &response.headers,
        keep_alive,
    );
    out.extend_from_slice(&response.body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_percent_decoded() {
        assert_eq!(
            parse_query("limit=15&offset=30&note=a%20b+c&flag&bad=%zz"),
            [
                ("limit", "15"),
                ("offset", "30"),
                ("note", "a b c"),
                ("flag", ""),
                ("bad", "%zz")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn keep_alive_defaults_by_version() {
        let close = [("connection".to_owned(), "Close".to_owned())];
        let keep = [("connection".to_owned(), "keep-alive".to_owned())];
        assert!(keeps_alive(1, &[]));
        assert!(!keeps_alive(1, &close));
        assert!(!keeps_alive(0, &[]));
        assert!(keeps_alive(0, &keep));
    }
}
