//! What the stand-in answers for a company: the behaviors a test can ask for, the spec strings the
//! binary accepts for them, and the answers they turn into.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde_json::json;

/// Page size of `Behavior::Paged` when the request has no usable `limit`.
pub const DEFAULT_PAGE_SIZE: u64 = 15;

/// Declared body length of `Behavior::Trickle`: far more than a client should ever wait for.
pub(crate) const TRICKLE_BODY_LEN: u64 = 1_000_000;

/// `Behavior::CloseMidAnswer` promises this many body bytes and sends `CLOSE_MID_ANSWER_SENT`.
const CLOSE_MID_ANSWER_DECLARED: u64 = 1000;
const CLOSE_MID_ANSWER_SENT: usize = 10;

/// `Behavior::CutOff` and `Behavior::Stall` promise this many body bytes more than they send.
const UNFINISHED_MISSING: u64 = 1000;

/// How the stand-in answers a request that got past method, path and authentication checks.
/// See docs/contract.md for the real endpoint's answers these imitate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// 200 `{"success":true,"recordsCount":R,"machinesUpdated":M,"message":"Collected R records"}`.
    Collect { records: u64, machines: u64 },
    /// 200 `{"success":true,"recordsCount":0,"message":"No new DEX data available"}`.
    NothingNew,
    /// A backlog of `total_records`, served one page per request with a `batching` object; the page
    /// is chosen by the `limit` (default 15) and `offset` (default 0) query parameters.
    Paged {
        total_records: u64,
        machines_per_page: u64,
    },
    /// 200 `{"success":false,"error":MESSAGE}`: the endpoint ran but collection failed.
    CollectionFailed(String),
    /// 400 `{"success":false,"error":"No DEX credentials configured"}`.
    NoCredentials,
    /// 500 with `error`, `stack` and `details`, as the real endpoint's catch-all.
    ServerError,
    /// Any status, content type, body and extra headers.
    Status {
        status: u16,
        content_type: String,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// The first `failures` requests of each company answer `status` (with `Retry-After` if
    /// given, body as `Behavior::status_page`), later ones behave as `then`.
    FailTimes {
        failures: u32,
        status: u16,
        retry_after: Option<String>,
        then: Box<Behavior>,
    },
    /// Read the request, never answer; the connection stays open until the client leaves.
    Hang,
    /// 200 headers promising a large body, then one body byte per `interval`.
    Trickle { interval: Duration },
    /// Read the request and close the connection.
    CloseWithoutAnswer,
    /// Status line, headers with `Content-Length: 1000`, 10 body bytes, then close.
    CloseMidAnswer,
    /// 200 application/json with truncated JSON.
    InvalidJson,
    /// 200 text/html error page, as a hosting platform serves.
    Html200,
    /// 200 application/json of `bytes` bytes, streamed.
    HugeBody { bytes: u64 },
    /// A redirect (e.g. 307) to `location`.
    Redirect { status: u16, location: String },
    /// `then`'s status line, headers and body, its `Content-Length` promising
    /// `UNFINISHED_MISSING` bytes more; then close the connection.
    CutOff { then: Box<Behavior> },
    /// The same, but keep the connection open and silent until the client leaves.
    Stall { then: Box<Behavior> },
    /// Wait `delay`, then behave as `then`.
    Delay {
        delay: Duration,
        then: Box<Behavior>,
    },
    /// `Collect` with counts derived from the company id (see `synthetic_counts`): deterministic
    /// and different per company, for demos and benchmarks.
    Synthetic,
}

impl Behavior {
    /// The answer for a bare failure status: the contract's JSON for 500, the hosting platform's
    /// HTML page for 502/503/504, a JSON error otherwise.
    pub fn status_page(status: u16) -> Behavior {
        let reason = reason_phrase(status);
        let (content_type, body) = match status {
            500 => ("application/json", server_error_body().to_string()),
            502..=504 => (
                "text/html; charset=utf-8",
                format!(
                    "<html><head><title>{status} {reason}</title></head>\
                     <body><h1>{status} {reason}</h1><p>The origin did not answer in time.</p></body></html>"
                ),
            ),
            _ => (
                "application/json",
                json!({ "success": false, "error": reason }).to_string(),
            ),
        };
        Behavior::Status {
            status,
            content_type: content_type.to_owned(),
            body,
            headers: Vec::new(),
        }
    }

    /// Whether answering needs the number of earlier requests of the company (`FailTimes`).
    pub(crate) fn counts_attempts(&self) -> bool {
        match self {
            Behavior::FailTimes { .. } => true,
            Behavior::Delay { then, .. } | Behavior::CutOff { then } | Behavior::Stall { then } => {
                then.counts_attempts()
            }
            _ => false,
        }
    }

    /// The answer to the request: `attempt` is how many earlier requests of this company the
    /// behavior has answered (only meaningful when `counts_attempts`).
    pub(crate) fn answer(
        &self,
        mut attempt: u64,
        company_id: &str,
        paging: Paging,
    ) -> PlannedAnswer {
        let mut delay = Duration::ZERO;
        let mut unfinished = None;
        let mut behavior = Cow::Borrowed(self);
        // Peel the wrappers off: a wrapper's `then` sees the attempts left after it.
        loop {
            match behavior {
                Cow::Borrowed(Behavior::Delay { delay: extra, then }) => {
                    delay += *extra;
                    behavior = Cow::Borrowed(then);
                }
                Cow::Borrowed(Behavior::CutOff { then }) => {
                    unfinished = Some(Ending::Close);
                    behavior = Cow::Borrowed(then);
                }
                Cow::Borrowed(Behavior::Stall { then }) => {
                    unfinished = Some(Ending::Hang);
                    behavior = Cow::Borrowed(then);
                }
                Cow::Borrowed(Behavior::FailTimes {
                    failures,
                    status,
                    retry_after,
                    then,
                }) => {
                    if attempt < u64::from(*failures) {
                        let mut failure = Behavior::status_page(*status);
                        if let (Behavior::Status { headers, .. }, Some(seconds)) =
                            (&mut failure, retry_after)
                        {
                            headers.push(("Retry-After".to_owned(), seconds.clone()));
                        }
                        behavior = Cow::Owned(failure);
                    } else {
                        attempt -= u64::from(*failures);
                        behavior = Cow::Borrowed(then);
                    }
                }
                _ => break,
            }
        }
        let answer = match (unfinished, behavior.leaf_answer(company_id, paging)) {
            (Some(ending), Answer::Respond(response)) => Answer::Unfinished {
                declared: response.body.len() as u64 + UNFINISHED_MISSING,
                response,
                ending,
            },
            (_, answer) => answer,
        };
        PlannedAnswer { delay, answer }
    }

    /// The answer of a behavior that is not a wrapper (`Delay`, `FailTimes`, `CutOff`, `Stall`).
    fn leaf_answer(&self, company_id: &str, paging: Paging) -> Answer {
        let response = match self {
            Behavior::Collect { records, machines } => collected(*records, *machines),
            Behavior::Synthetic => {
                let (records, machines) = synthetic_counts(company_id);
                collected(records, machines)
            }
            Behavior::NothingNew => Response::json(
                200,
                json!({ "success": true, "recordsCount": 0, "message": "No new DEX data available" }),
            ),
            Behavior::Paged {
                total_records,
                machines_per_page,
            } => page(*total_records, *machines_per_page, paging),
            Behavior::CollectionFailed(message) => {
                Response::json(200, json!({ "success": false, "error": message }))
            }
            Behavior::NoCredentials => Response::json(
                400,
                json!({ "success": false, "error": "No DEX credentials configured" }),
            ),
            Behavior::ServerError => Response::json(500, server_error_body()),
            Behavior::Status {
                status,
                content_type,
                body,
                headers,
            } => Response {
                status: *status,
                content_type: Cow::Owned(content_type.clone()),
                headers: headers.clone(),
                body: body.clone().into_bytes(),
            },
            Behavior::InvalidJson => Response {
                status: 200,
                content_type: Cow::Borrowed("application/json"),
                headers: Vec::new(),
                body: br#"{"success":true,"recordsCou"#.to_vec(),
            },
            Behavior::Html200 => Response {
                status: 200,
                content_type: Cow::Borrowed("text/html; charset=utf-8"),
                headers: Vec::new(),
                body: b"<html><body>Application error</body></html>".to_vec(),
            },
            Behavior::Redirect { status, location } => Response {
                status: *status,
                content_type: Cow::Borrowed("text/plain"),
                headers: vec![("Location".to_owned(), location.clone())],
                body: Vec::new(),
            },
            Behavior::Hang => return Answer::Hang,
            Behavior::Trickle { interval } => {
                return Answer::Trickle {
                    interval: *interval,
                }
            }
            Behavior::CloseWithoutAnswer => return Answer::Close,
            Behavior::CloseMidAnswer => {
                let body = PaddedJson::new(CLOSE_MID_ANSWER_DECLARED);
                return Answer::Unfinished {
                    response: Response {
                        status: 200,
                        content_type: Cow::Borrowed("application/json"),
                        headers: Vec::new(),
                        body: (0..CLOSE_MID_ANSWER_SENT as u64)
                            .map(|position| body.byte_at(position))
                            .collect(),
                    },
                    declared: CLOSE_MID_ANSWER_DECLARED,
                    ending: Ending::Close,
                };
            }
            Behavior::HugeBody { bytes } => return Answer::HugeBody { bytes: *bytes },
            Behavior::Delay { .. }
            | Behavior::FailTimes { .. }
            | Behavior::CutOff { .. }
            | Behavior::Stall { .. } => {
                unreachable!("wrappers are peeled off by Behavior::answer")
            }
        };
        Answer::Respond(response)
    }
}

/// The counts `Behavior::Synthetic` reports for a company: `(records, machines)` =
/// `(h % 20, h % 5)` where `h` is the 64-bit FNV-1a hash of the company id.
pub fn synthetic_counts(company_id: &str) -> (u64, u64) {
    // FNV-1a rather than std's hasher: its output is fixed forever, so expected totals can be
    // computed by anyone (demo scripts, other languages).
    let hash = company_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    (hash % 20, hash % 5)
}

fn collected(records: u64, machines: u64) -> Response {
    Response::json(
        200,
        json!({
            "success": true,
            "recordsCount": records,
            "machinesUpdated": machines,
            "message": format!("Collected {records} records"),
        }),
    )
}

fn page(total_records: u64, machines_per_page: u64, paging: Paging) -> Response {
    // The endpoint reads `parseInt(limit) || 15`: a missing, unparsable or zero limit is 15.
    let limit = paging
        .limit
        .filter(|&limit| limit > 0)
        .unwrap_or(DEFAULT_PAGE_SIZE);
    let offset = paging.offset.unwrap_or(0);
    let records = limit.min(total_records.saturating_sub(offset));
    let has_more = offset + records < total_records;
    Response::json(
        200,
        json!({
            "success": true,
            "recordsCount": records,
            "machinesUpdated": if records > 0 { machines_per_page } else { 0 },
            "message": format!("Collected {records} records"),
            "errors": [],
            "batching": {
                "limit": limit,
                "offset": offset,
                "totalAvailable": total_records,
                "hasMore": has_more,
                "nextOffset": if has_more { json!(offset + records) } else { json!(null) },
            },
        }),
    )
}

fn server_error_body() -> serde_json::Value {
    json!({
        "success": false,
        "error": "Internal error: db timeout",
        "stack": "Error: Internal error: db timeout\n    at handler (/app/route.js:10:5)\n    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)",
        "details": "Connection to the database timed out after 10000 ms",
    })
}

/// The paging query parameters of a request, when present and numeric.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Paging {
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

/// An answer and the delay (from `Delay` wrappers) to wait before giving it.
pub(crate) struct PlannedAnswer {
    pub delay: Duration,
    pub answer: Answer,
}

/// What to do on the socket.
pub(crate) enum Answer {
    Respond(Response),
    Hang,
    Trickle {
        interval: Duration,
    },
    Close,
    /// A response's head, with a `Content-Length` of `declared`, and its body, shorter than
    /// that; then `ending`.
    Unfinished {
        response: Response,
        declared: u64,
        ending: Ending,
    },
    HugeBody {
        bytes: u64,
    },
}

/// What follows an unfinished answer.
#[derive(Clone, Copy)]
pub(crate) enum Ending {
    Close,
    Hang,
}

/// A complete, well-formed HTTP response.
pub(crate) struct Response {
    pub status: u16,
    pub content_type: Cow<'static, str>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, body: serde_json::Value) -> Response {
        Response {
            status,
            content_type: Cow::Borrowed("application/json"),
            headers: Vec::new(),
            body: body.to_string().into_bytes(),
        }
    }
}

/// The JSON document streamed by `HugeBody` and `Trickle`: an ordinary answer whose message is
/// padded with `x` to exactly `len` bytes (truncated when `len` is shorter than the frame).
pub(crate) struct PaddedJson {
    len: u64,
}

impl PaddedJson {
    const HEAD: &'static [u8] = br#"{"success":true,"recordsCount":1,"message":""#;
    const TAIL: &'static [u8] = br#""}"#;

    pub fn new(len: u64) -> PaddedJson {
        PaddedJson { len }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    fn tail_start(&self) -> u64 {
        self.len
            .saturating_sub(Self::TAIL.len() as u64)
            .max(Self::HEAD.len() as u64)
    }

    pub fn byte_at(&self, position: u64) -> u8 {
        if position < Self::HEAD.len() as u64 {
            Self::HEAD[position as usize]
        } else if position >= self.tail_start() {
            Self::TAIL[(position - self.tail_start()) as usize]
        } else {
            b'x'
        }
    }

    /// Fills `out` with the bytes starting at `offset` (the caller keeps `offset + out.len()`
    /// within `len`).
    pub fn fill(&self, offset: u64, out: &mut [u8]) {
        out.fill(b'x');
        let end = offset + out.len() as u64;
        let framed =
            (offset..end.min(Self::HEAD.len() as u64)).chain(self.tail_start().max(offset)..end);
        for position in framed {
            out[(position - offset) as usize] = self.byte_at(position);
        }
    }
}

/// Reason phrase for the status line.
pub(crate) fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// A spec string the binary could not turn into a behavior.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    spec: String,
    problem: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad behavior spec `{}`: {}", self.spec, self.problem)
    }
}

impl std::error::Error for SpecError {}

/// The spec strings of the `dex-stand-in` binary.
pub const SPEC_FORMS: &str = "synthetic, collect:RECORDS:MACHINES, nothing-new, \
paged:TOTAL:MACHINES_PER_PAGE, failed:MESSAGE, no-credentials, server-error, status:CODE, hang, \
trickle:INTERVAL_MS, html, invalid-json, close, close-mid-answer, huge:BYTES, redirect:URL, \
delay:MS:SPEC, fail-times:N:CODE:SPEC, cut-off:SPEC, stall:SPEC";

impl FromStr for Behavior {
    type Err = SpecError;

    /// Parses the binary's spec strings, e.g. `collect:12:3` or `fail-times:2:503:synthetic`
    /// (all forms in `SPEC_FORMS`).
    fn from_str(spec: &str) -> Result<Behavior, SpecError> {
        let error = |problem: &str| SpecError {
            spec: spec.to_owned(),
            problem: problem.to_owned(),
        };
        let (name, argument) = match spec.split_once(':') {
            Some((name, argument)) => (name, Some(argument)),
            None => (spec, None),
        };
        let number = |text: &str, what: &str| -> Result<u64, SpecError> {
            text.parse()
                .map_err(|_| error(&format!("{what} must be a whole number, got `{text}`")))
        };
        let status = |text: &str| -> Result<u16, SpecError> {
            text.parse()
                .ok()
                .filter(|code| (100..=999).contains(code))
                .ok_or_else(|| error(&format!("`{text}` is not an HTTP status code")))
        };
        let two = |argument: Option<&str>, form: &str| -> Result<(String, String), SpecError> {
            argument
                .and_then(|argument| argument.split_once(':'))
                .map(|(first, second)| (first.to_owned(), second.to_owned()))
                .ok_or_else(|| error(&format!("expected {form}")))
        };
        let one = |argument: Option<&str>, form: &str| -> Result<String, SpecError> {
            argument
                .filter(|argument| !argument.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| error(&format!("expected {form}")))
        };
        let no_argument = |behavior: Behavior| match argument {
            None => Ok(behavior),
            Some(_) => Err(error(&format!("`{name}` takes no argument"))),
        };
        match name {
            "synthetic" => no_argument(Behavior::Synthetic),
            "nothing-new" => no_argument(Behavior::NothingNew),
            "no-credentials" => no_argument(Behavior::NoCredentials),
            "server-error" => no_argument(Behavior::ServerError),
            "hang" => no_argument(Behavior::Hang),
            "html" => no_argument(Behavior::Html200),
            "invalid-json" => no_argument(Behavior::InvalidJson),
            "close" => no_argument(Behavior::CloseWithoutAnswer),
            "close-mid-answer" => no_argument(Behavior::CloseMidAnswer),
            "collect" => {
                let (records, machines) = two(argument, "collect:RECORDS:MACHINES")?;
                Ok(Behavior::Collect {
                    records: number(&records, "RECORDS")?,
                    machines: number(&machines, "MACHINES")?,
                })
            }
            "paged" => {
                let (total, machines) = two(argument, "paged:TOTAL:MACHINES_PER_PAGE")?;
                Ok(Behavior::Paged {
                    total_records: number(&total, "TOTAL")?,
                    machines_per_page: number(&machines, "MACHINES_PER_PAGE")?,
                })
            }
            "failed" => Ok(Behavior::CollectionFailed(one(argument, "failed:MESSAGE")?)),
            "status" => Ok(Behavior::status_page(status(&one(
                argument,
                "status:CODE",
            )?)?)),
            "trickle" => {
                let interval = number(&one(argument, "trickle:INTERVAL_MS")?, "INTERVAL_MS")?;
                Ok(Behavior::Trickle {
                    interval: Duration::from_millis(interval),
                })
            }
            "huge" => Ok(Behavior::HugeBody {
                bytes: number(&one(argument, "huge:BYTES")?, "BYTES")?,
            }),
            "redirect" => Ok(Behavior::Redirect {
                status: 307,
                location: one(argument, "redirect:URL")?,
            }),
            "delay" => {
                let (delay, then) = two(argument, "delay:MS:SPEC")?;
                Ok(Behavior::Delay {
                    delay: Duration::from_millis(number(&delay, "MS")?),
                    then: Box::new(then.parse()?),
                })
            }
            "cut-off" => Ok(Behavior::CutOff {
                then: Box::new(one(argument, "cut-off:SPEC")?.parse()?),
            }),
            "stall" => Ok(Behavior::Stall {
                then: Box::new(one(argument, "stall:SPEC")?.parse()?),
            }),
            "fail-times" => {
                let (failures, rest) = two(argument, "fail-times:N:CODE:SPEC")?;
                let (code, then) = two(Some(&rest), "fail-times:N:CODE:SPEC")?;
                let failures = number(&failures, "N")?;
                Ok(Behavior::FailTimes {
                    failures: u32::try_from(failures).map_err(|_| error("N is too large"))?,
                    status: status(&code)?,
                    retry_after: None,
                    then: Box::new(then.parse()?),
                })
            }
            _ => Err(error(&format!(
                "unknown behavior; expected one of: {SPEC_FORMS}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(behavior: &Behavior, attempt: u64, paging: Paging) -> serde_json::Value {
        match behavior.answer(attempt, "company", paging).answer {
            Answer::Respond(response) => serde_json::from_slice(&response.body).unwrap(),
            _ => panic!("expected a complete response"),
        }
    }

    #[test]
    fn padded_json_is_valid_json_of_the_requested_length() {
        for len in [46, 47, 100, 65_536 + 3] {
            let padded = PaddedJson::new(len);
            let mut bytes = vec![0; len as usize];
            // Fill in uneven pieces to exercise chunk boundaries inside the frame.
            let mut offset = 0;
            for piece in bytes.chunks_mut(7) {
                padded.fill(offset, piece);
                offset += piece.len() as u64;
            }
            let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(parsed["recordsCount"], 1);
            assert!(bytes
                .iter()
                .enumerate()
                .all(|(i, &b)| padded.byte_at(i as u64) == b));
        }
    }

    #[test]
    fn paging_arithmetic() {
        let paged = Behavior::Paged {
            total_records: 40,
            machines_per_page: 4,
        };
        let first = body_of(&paged, 0, Paging::default());
        assert_eq!(first["recordsCount"], 15);
        assert_eq!(first["batching"]["hasMore"], true);
        assert_eq!(first["batching"]["nextOffset"], 15);
        let last = body_of(
            &paged,
            0,
            Paging {
                limit: Some(15),
                offset: Some(30),
            },
        );
        assert_eq!(last["recordsCount"], 10);
        assert_eq!(last["batching"]["hasMore"], false);
        assert_eq!(last["batching"]["nextOffset"], serde_json::Value::Null);
        let beyond = body_of(
            &paged,
            0,
            Paging {
                limit: Some(15),
                offset: Some(99),
            },
        );
        assert_eq!(beyond["recordsCount"], 0);
        assert_eq!(beyond["machinesUpdated"], 0);
        let zero_limit = body_of(
            &paged,
            0,
            Paging {
                limit: Some(0),
                offset: None,
            },
        );
        assert_eq!(zero_limit["batching"]["limit"], 15);
    }

    #[test]
    fn nested_wrappers_share_the_attempt_count() {
        let behavior = Behavior::Delay {
            delay: Duration::from_millis(5),
            then: Box::new(Behavior::FailTimes {
                failures: 1,
                status: 503,
                retry_after: None,
                then: Box::new(Behavior::FailTimes {
                    failures: 1,
                    status: 429,
                    retry_after: Some("7".to_owned()),
                    then: Box::new(Behavior::NothingNew),
                }),
            }),
        };
        assert!(behavior.counts_attempts());
        let statuses: Vec<u16> = (0..3)
            .map(|attempt| {
                let planned = behavior.answer(attempt, "company", Paging::default());
                assert_eq!(planned.delay, Duration::from_millis(5));
                match planned.answer {
                    Answer::Respond(response) => response.status,
                    _ => panic!("expected a response"),
                }
            })
            .collect();
        assert_eq!(statuses, [503, 429, 200]);
    }

    #[test]
    fn specs_parse() {
        assert_eq!(
            "collect:12:3".parse(),
            Ok(Behavior::Collect {
                records: 12,
                machines: 3
            })
        );
        assert_eq!(
            "failed:Login failed: bad password".parse(),
            Ok(Behavior::CollectionFailed(
                "Login failed: bad password".to_owned()
            ))
        );
        assert_eq!(
            "redirect:https://example.com/x".parse(),
            Ok(Behavior::Redirect {
                status: 307,
                location: "https://example.com/x".to_owned()
            })
        );
        assert_eq!(
            "fail-times:2:503:paged:40:4".parse(),
            Ok(Behavior::FailTimes {
                failures: 2,
                status: 503,
                retry_after: None,
                then: Box::new(Behavior::Paged {
                    total_records: 40,
                    machines_per_page: 4
                }),
            })
        );
        assert_eq!(
            "cut-off:status:503".parse(),
            Ok(Behavior::CutOff {
                then: Box::new(Behavior::status_page(503))
            })
        );
        // Wrapped, a FailTimes still counts its company's attempts: it fails only N times.
        let cut_failing: Behavior = "cut-off:fail-times:1:503:synthetic".parse().unwrap();
        assert!(cut_failing.counts_attempts());
        assert_eq!(
            "stall:synthetic".parse(),
            Ok(Behavior::Stall {
                then: Box::new(Behavior::Synthetic)
            })
        );
        for bad in [
            "",
            "cut-off",
            "stall:",
            "collect:1",
            "collect:a:b",
            "status:abc",
            "hang:1",
            "frobnicate",
            "fail-times:1:503",
        ] {
            assert!(bad.parse::<Behavior>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn synthetic_counts_are_stable() {
        assert_eq!(
            synthetic_counts("00000000-0000-0000-0000-000000000001"),
            synthetic_counts("00000000-0000-0000-0000-000000000001")
        );
        let (records, machines) = synthetic_counts("acme");
        assert!(records < 20 && machines < 5);
    }
}
