//! The `/api/dex/collect-bulk` contract: how one company is collected.
//!
//! The request and its headers, paging through `batching.hasMore`, reading an answer within its
//! limits, classifying it, and the retry policy (docs/contract.md says the same for the web
//! app's developers). The fan-out calls [`collect_company`] once per company.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::{Client, StatusCode, Url};
use serde_json::Value;

use crate::flow::{Flow, Signal};

pub const COLLECT_PATH: &str = "/api/dex/collect-bulk";
/// Longest text kept from an endpoint's answer in a result or history row.
pub const MAX_ERROR_CHARS: usize = 300;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const MAX_RETRY_AFTER_JITTER: Duration = Duration::from_secs(2);
/// How long an idle connection is kept for reuse (see `build_client`).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Why a retryable failure was not retried.
pub const RETRY_BUDGET_SPENT: &str = "the run's retry budget is spent";

/// What every request of a run needs to know.
#[derive(Clone)]
pub struct EndpointConfig {
    pub site_url: String,
    pub service_key: String,
    pub request_timeout: Duration,
    pub max_pages: u32,
    pub max_retries: u32,
    pub max_response_bytes: usize,
}

/// How one company's collection ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompanyOutcome {
    pub success: bool,
    /// The last HTTP status received, if any answer came at all.
    pub http_status: Option<u16>,
    /// Pages collected successfully.
    pub pages: u32,
    /// HTTP requests sent, retries included.
    pub attempts: u32,
    pub records: i64,
    pub machines: i64,
    pub error: Option<String>,
    /// The page cap stopped paging while the endpoint still had more.
    pub more_pending: bool,
    /// The endpoint rejected the service key: every other company would fail the same way.
    pub auth_rejected: bool,
    /// Its requests were dropped by a stop of the whole run that is none of the company's doing (a
    /// cancel or shutdown, a key the endpoint refused for another company, a history that cannot
    /// be written). Not the deadline's: a company always slower than the run's deadline would
    /// otherwise never be counted failing.
    pub dropped_by_run: bool,
    pub duration: Duration,
}

impl CompanyOutcome {
    /// A failure of the run's, not of the company's (a refused key, or requests the run dropped):
    /// the history leaves the company's state, and its failures in a row, as they were.
    pub fn is_run_failure(&self) -> bool {
        self.auth_rejected || self.dropped_by_run
    }
}

/// Checks a site URL: http or https, a host, no credentials, no query or fragment.
pub fn validate_site_url(site_url: &str) -> Result<(), String> {
    let url = Url::parse(site_url).map_err(|e| format!("\"{site_url}\" is not a URL ({e})"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "scheme must be http or https, not \"{}\"",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials do not belong in the URL".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("give the base URL only, without ?query or #fragment".into());
    }
    Ok(())
}

/// `{site_url}/api/dex/collect-bulk`, with `?limit=&offset=` for a later page.
pub fn collect_url(site_url: &str, page: Option<&NextPage>) -> String {
    let mut url = format!("{}{}", site_url.trim_end_matches('/'), COLLECT_PATH);
    if let Some(page) = page {
        match page.limit {
            Some(limit) => url.push_str(&format!("?limit={limit}&offset={}", page.offset)),
            None => url.push_str(&format!("?offset={}", page.offset)),
        }
    }
    url
}

/// One HTTP client per backend: it keeps connections alive across companies and runs.
pub fn build_client(
    connect_timeout: Duration,
    pool_size: usize,
    extra_ca_pem: Option<&[u8]>,
) -> Result<Client, String> {
    let mut builder = Client::builder()
        .connect_timeout(connect_timeout)
        .pool_max_idle_per_host(pool_size)
        // Under the shortest keep-alive timeout servers commonly use (Node's and Apache's 5 s):
        // a connection the server may be closing as a request is written on it is not taken.
        // hyper-util checks the age as it takes a connection, so this holds also between runs.
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_nodelay(true)
        // The key must never reach another origin, and a redirect is a misconfiguration anyway.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("dex_collector/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = extra_ca_pem {
        let certificates = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("no usable PEM certificate in it ({e})"))?;
        // An empty file (one being rewritten, say) would leave the system's roots alone trusted:
        // every request would fail on its certificate instead of the run on its setting.
        if certificates.is_empty() {
            return Err("no PEM certificate in it (empty, or read while being rewritten?)".into());
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", root_cause(&e)))
}

/// Which run a request belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunIdentity {
    /// `dex_collector.runs.id`: sent as `X-Dex-Run-Id`; unique within one database's history only.
    pub id: i64,
    /// `dex_collector.runs.run_key`, a random UUID: makes every `Idempotency-Key` unique across
    /// databases, clusters, restores and re-created extensions.
    pub key: String,
}

/// Collects one company: every page, each with its retries, within `deadline`; every request
/// waits while the run's `flow` is paused, tells it what it met, and retries only within its
/// budget.
pub async fn collect_company(
    client: &Client,
    config: &EndpointConfig,
    run: &RunIdentity,
    company_id: &str,
    deadline: Instant,
    flow: &Flow,
) -> CompanyOutcome {
    let started = Instant::now();
    let mut outcome = CompanyOutcome::default();
    let mut next_page: Option<NextPage> = None;
    loop {
        let page_number = outcome.pages + 1;
        let request = PageRequest {
            run,
            company_id,
            page_number,
            page: next_page.as_ref(),
        };
        match fetch_page(client, config, &request, deadline, flow, &mut outcome).await {
            PageAnswer::Collected {
                records,
                machines,
                next,
            } => {
                outcome.pages += 1;
                outcome.records = outcome.records.saturating_add(records);
                outcome.machines = outcome.machines.saturating_add(machines);
                let Some(next) = next else {
                    outcome.success = true;
                    break;
                };
                let previous_offset = next_page.as_ref().map_or(0, |page| page.offset);
                if next.offset <= previous_offset {
                    outcome.error = Some(format!(
                        "the endpoint's paging did not advance (nextOffset {} after offset {previous_offset})",
                        next.offset
                    ));
                    break;
                }
                if outcome.pages >= config.max_pages {
                    outcome.success = true;
                    outcome.more_pending = true;
                    break;
                }
                next_page = Some(next);
            }
            PageAnswer::Failed { error, retry } => {
                outcome.auth_rejected = retry == Retry::AuthRejected;
                outcome.error = Some(error);
                break;
            }
        }
    }
    outcome.duration = started.elapsed();
    outcome
}

struct PageRequest<'a> {
    run: &'a RunIdentity,
    company_id: &'a str,
    page_number: u32,
    page: Option<&'a NextPage>,
}

/// Where the next page starts, from the answer's `batching` object.
#[derive(Debug, Clone, PartialEq)]
pub struct NextPage {
    pub limit: Option<u64>,
    pub offset: u64,
}

/// What one answer means.
#[derive(Debug, Clone, PartialEq)]
pub enum PageAnswer {
    Collected {
        records: i64,
        machines: i64,
        next: Option<NextPage>,
    },
    Failed {
        error: String,
        retry: Retry,
    },
}

/// Whether a failed request is worth sending again.
#[derive(Debug, Clone, PartialEq)]
pub enum Retry {
    No,
    /// Transient: try again, after the server's `Retry-After` when it gave one.
    Later(Option<Duration>),
    /// 401: the key is wrong for every company; stop the run.
    AuthRejected,
}

/// `dex-collector:{run key}:{company}:{page number}`: the same for every retry of one page of
/// one run, and never sent for anything else (docs/contract.md).
fn idempotency_key(request: &PageRequest<'_>) -> String {
    format!(
        "dex-collector:{}:{}:{}",
        request.run.key, request.company_id, request.page_number
    )
}

/// Sends one page's request, retrying transient failures with backoff within the deadline.
async fn fetch_page(
    client: &Client,
    config: &EndpointConfig,
    request: &PageRequest<'_>,
    deadline: Instant,
    flow: &Flow,
    outcome: &mut CompanyOutcome,
) -> PageAnswer {
    let mut retries_done = 0;
    loop {
        // Held back until no pause holds: one that a later 429 lengthened while this request
        // waited holds it again. Each waits its own part of the pause longer (but not past the
        // deadline), so that the requests held back do not all come back at once. The fan-out's
        // own deadline ends a pause that outlasts the run.
        while let Some(resume_at) = flow.paused_until(Instant::now()) {
            let left = resume_at.saturating_duration_since(Instant::now());
            let jitter = retry_after_jitter(left, request.company_id);
            let back_at = resume_at
                .checked_add(jitter)
                .map_or(resume_at, |back_at| back_at.min(deadline.max(resume_at)));
            tokio::time::sleep_until(back_at.into()).await;
        }
        if retries_done > 0 {
            flow.retry_sent();
        }
        outcome.attempts += 1;
        let sent_at = Instant::now();
        let Attempt {
            status,
            answer,
            exchange,
        } = send_once(client, config, request).await;
        if status.is_some() {
            outcome.http_status = status;
        }
        let retry_after = match &answer {
            PageAnswer::Failed {
                retry: Retry::Later(after),
                ..
            } => Some(*after),
            _ => None,
        };
        let signal = match (status, exchange) {
            (_, Exchange::NotSent) => None,
            (Some(429), _) => Some(Signal::RateLimited),
            (Some(503), _) => Some(Signal::Unavailable),
            // A gateway's: it could not reach the app, or the app did not answer in its time,
            // as a refused connection or a timeout here would say.
            (Some(502 | 504), _) | (_, Exchange::CutOff) => Some(Signal::Dropped),
            (_, Exchange::Whole) => Some(Signal::Answered),
        };
        // A pause past the deadline would hold back every company for nothing: that company
        // gives up its retry (below), the others go on.
        let run_pause = retry_after.flatten().filter(|after| {
            Instant::now()
                .checked_add(*after)
                .is_some_and(|at| at < deadline)
        });
        if let Some(signal) = signal {
            flow.answered(sent_at, signal, run_pause);
        }
        let Some(after) = retry_after else {
            return answer;
        };
        if retries_done >= config.max_retries {
            return answer;
        }
        let wait = match after {
            Some(after) => after.saturating_add(retry_after_jitter(after, request.company_id)),
            None => backoff(retries_done, request.company_id),
        };
        // A Retry-After too far away (even past what an Instant can hold) ends the retries.
        if Instant::now()
            .checked_add(wait)
            .is_none_or(|resume_at| resume_at >= deadline)
        {
            return answer;
        }
        if !flow.may_retry() {
            return not_retried(answer);
        }
        tokio::time::sleep(wait).await;
        retries_done += 1;
    }
}

/// A failure the run's retry budget left without its retry, saying so.
fn not_retried(answer: PageAnswer) -> PageAnswer {
    match answer {
        PageAnswer::Failed { error, retry } => PageAnswer::Failed {
            error: format!("{error} (not retried: {RETRY_BUDGET_SPENT})"),
            retry,
        },
        collected => collected,
    }
}

/// One HTTP exchange, bounded by the request timeout; returns the status seen and its meaning.
/// A status line other than 2xx means what it says even when the body after it was cut off or
/// did not finish in time (a 429's `Retry-After` still holds the run back); a 2xx answer needs its
/// whole body.
async fn send_once(client: &Client, config: &EndpointConfig, request: &PageRequest<'_>) -> Attempt {
    let Ok(mut key) = HeaderValue::from_str(&config.service_key) else {
        return Attempt {
            status: None,
            answer: failed("the service key is not a valid header value", Retry::No),
            exchange: Exchange::NotSent,
        };
    };
    key.set_sensitive(true);
    let timed_out = || {
        format!(
            "timed out after {}",
            describe_duration(config.request_timeout)
        )
    };
    let cut_off = |status, error| Attempt {
        status,
        answer: failed(error, Retry::Later(None)),
        exchange: Exchange::CutOff,
    };
    let deadline = tokio::time::Instant::now() + config.request_timeout;
    let sent = client
        .post(collect_url(&config.site_url, request.page))
        .header(CONTENT_TYPE, "application/json")
        .header("X-Service-Key", key)
        .header("X-Company-ID", request.company_id)
        .header("X-Dex-Run-Id", request.run.id.to_string())
        .header("Idempotency-Key", idempotency_key(request))
        .body("{}")
        .send();
    let response = match tokio::time::timeout_at(deadline, sent).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return cut_off(None, transport_error(&error)),
        Err(_) => return cut_off(None, timed_out()),
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    // A Retry-After counts from when it came, not from the end of a body that came slowly.
    let (headers_came, headers_came_at) = (Instant::now(), SystemTime::now());
    let mut body = Vec::new();
    let read = read_body(response, config.max_response_bytes, &mut body);
    let unfinished = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(())) => None,
        Ok(Err(BodyError::TooLarge)) => {
            return Attempt {
                status: Some(status),
                answer: failed(
                    format!(
                        "the answer is larger than dex_collector.max_response_bytes ({} bytes); abandoned",
                        config.max_response_bytes
                    ),
                    Retry::No,
                ),
                exchange: Exchange::Whole,
            }
        }
        Ok(Err(BodyError::Cut(error))) => Some(transport_error(&error)),
        Err(_) => Some(timed_out()),
    };
    let header_text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let answer = classify(
        status,
        &Answer {
            content_type: header_text(CONTENT_TYPE),
            retry_after: header_text(RETRY_AFTER),
            location: header_text(LOCATION),
            body: &body,
        },
        &config.site_url,
        headers_came_at,
    );
    // One its body outlasted has passed, as a date in the past: retry at once.
    let answer = match answer {
        PageAnswer::Failed {
            error,
            retry: Retry::Later(Some(after)),
        } => failed(
            error,
            Retry::Later(Some(after.saturating_sub(headers_came.elapsed()))),
        ),
        answer => answer,
    };
    let Some(cause) = unfinished else {
        return Attempt {
            status: Some(status),
            answer,
            exchange: Exchange::Whole,
        };
    };
    match answer {
        PageAnswer::Failed { error, retry }
            if !StatusCode::from_u16(status).is_ok_and(|code| code.is_success()) =>
        {
            Attempt {
                status: Some(status),
                answer: failed(format!("{error} (its body cut off: {cause})"), retry),
                exchange: Exchange::CutOff,
            }
        }
        _ => cut_off(Some(status), cause),
    }
}

/// One request and what came of it.
struct Attempt {
    /// The answer's status, if its status line came.
    status: Option<u16>,
    answer: PageAnswer,
    exchange: Exchange,
}

/// How far one request went: what it tells an adaptive limit.
#[derive(Clone, Copy)]
enum Exchange {
    /// Never sent (the request could not be built): it says nothing of the endpoint.
    NotSent,
    /// The whole answer came (or as much of it as `max_response_bytes` lets the run read): its
    /// latency is a sample, unless it is a 429 or 503.
    Whole,
    /// Sent, and no whole answer came: the connection failed or was closed before the end of the
    /// body, or the time ran out. A dropped request, unless its status line said 429 or 503: a
    /// latency is only what a whole answer took.
    CutOff,
}

/// Why a body was not read to its end.
enum BodyError {
    /// Past `max_response_bytes`, declared or counted.
    TooLarge,
    /// The connection failed or closed before the body's end.
    Cut(reqwest::Error),
}

/// Reads the body chunk by chunk into `body`, abandoning it past `max_bytes`; what came before a
/// failure stays in `body`.
async fn read_body(
    mut response: reqwest::Response,
    max_bytes: usize,
    body: &mut Vec<u8>,
) -> Result<(), BodyError> {
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_bytes as u64) {
        return Err(BodyError::TooLarge);
    }
    // What is declared is reserved up to 64 kB only: a Content-Length near max_response_bytes
    // from a proxy that then sends slowly would otherwise take that much memory per request in
    // flight before a byte came.
    body.reserve(declared.map_or(1024, |length| length as usize).min(65_536));
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Cut)? {
        if body.len() + chunk.len() > max_bytes {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(())
}

/// The parts of an HTTP answer that decide its meaning.
pub struct Answer<'a> {
    pub content_type: Option<&'a str>,
    pub retry_after: Option<&'a str>,
    pub location: Option<&'a str>,
    pub body: &'a [u8],
}

/// Decides what an answer means, following docs/contract.md's table.
pub fn classify(status: u16, answer: &Answer<'_>, site_url: &str, now: SystemTime) -> PageAnswer {
    let status_code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status_code.is_redirection() {
        let target = answer
            .location
            .and_then(|location| Url::parse(site_url).ok()?.join(location).ok())
            .map_or_else(
                || "an unknown location".to_string(),
                |url| url.origin().ascii_serialization(),
            );
        return failed(
            format!("HTTP {status}: redirected to {target}; redirects are not followed"),
            Retry::No,
        );
    }
    if status == 401 {
        return failed(
            "service key rejected by the endpoint (HTTP 401)",
            Retry::AuthRejected,
        );
    }
    if !status_code.is_success() {
        let retry = match status {
            429 | 502 | 503 | 504 => {
                Retry::Later(answer.retry_after.and_then(|v| parse_retry_after(v, now)))
            }
            _ => Retry::No,
        };
        return failed(format!("HTTP {status}: {}", error_text(answer)), retry);
    }
    let json = match answer_json(answer.body) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(_) | Err(_) if looks_like_html(answer) => {
            return failed(
                format!(
                    "HTTP {status} with an HTML page instead of JSON: {}",
                    error_text(answer)
                ),
                Retry::No,
            )
        }
        Ok(_) => {
            return failed(
                format!("HTTP {status} with a JSON answer that is not an object"),
                Retry::No,
            )
        }
        Err(e) => {
            return failed(
                format!(
                    "HTTP {status} with invalid JSON ({e}): {}",
                    error_text(answer)
                ),
                Retry::No,
            )
        }
    };
    match json.get("success") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            let error = json_error_text(&json)
                .unwrap_or_else(|| "the endpoint reported failure without a reason".into());
            return failed(error, Retry::No);
        }
        _ => {
            return failed(
                format!("HTTP {status} with an answer that has no \"success\" field"),
                Retry::No,
            )
        }
    }
    PageAnswer::Collected {
        records: count(&json, "recordsCount"),
        machines: count(&json, "machinesUpdated"),
        next: next_page(&json),
    }
}

/// An answer's JSON. A string cut in the middle of a character outside the Basic Multilingual
/// Plane (an emoji in an `errors` text the web app shortened) can hold a lone UTF-16 surrogate
/// escape, which JavaScript's `JSON.stringify` writes as such since ES2019 and serde_json refuses:
/// such an escape reads as U+FFFD, so that an answer is not failed for a text it need not read.
fn answer_json(body: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(body).or_else(|error| match replace_lone_surrogates(body) {
        Some(mended) => serde_json::from_slice(&mended),
        None => Err(error),
    })
}

/// `body` with each `\u` escape of a lone surrogate written as `\uFFFD`; None when it has none.
/// Outside strings JSON has no backslash, and within them each escape starts with one: every
/// backslash pair is stepped over, so an escaped backslash followed by `u` is not taken for one.
fn replace_lone_surrogates(body: &[u8]) -> Option<Vec<u8>> {
    let escape_at = |at: usize| -> Option<u32> {
        let hex = body.get(at..at + 6)?.strip_prefix(b"\\u")?;
        u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    };
    // Copied at the first replacement: a body that fails to parse for another reason (an HTML
    // page, a cut-off answer) is not copied.
    let mut mended: Option<Vec<u8>> = None;
    let mut at = 0;
    while at < body.len() {
        if body[at] != b'\\' {
            at += 1;
            continue;
        }
        match escape_at(at) {
            Some(0xD800..=0xDBFF) if matches!(escape_at(at + 6), Some(0xDC00..=0xDFFF)) => at += 12,
            Some(0xD800..=0xDFFF) => {
                mended.get_or_insert_with(|| body.to_vec())[at..at + 6].copy_from_slice(b"\\uFFFD");
                at += 6;
            }
            _ => at += 2,
        }
    }
    mended
}

fn failed(error: impl Into<String>, retry: Retry) -> PageAnswer {
    PageAnswer::Failed {
        error: error.into(),
        retry,
    }
}

/// A count field; missing, null, negative or not a number counts as 0 (docs/contract.md).
fn count(json: &Value, field: &str) -> i64 {
    json.get(field)
        .and_then(Value::as_i64)
        .filter(|n| *n >= 0)
        .unwrap_or(0)
}

fn next_page(json: &Value) -> Option<NextPage> {
    let batching = json.get("batching")?;
    if batching.get("hasMore").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let limit = batching.get("limit").and_then(Value::as_u64);
    let offset = batching
        .get("nextOffset")
        .and_then(Value::as_u64)
        .or_else(|| Some(batching.get("offset").and_then(Value::as_u64)? + limit?))?;
    Some(NextPage { limit, offset })
}

/// The `error` (or `message`) text of a JSON answer; never its `stack` or `details`.
fn json_error_text(json: &Value) -> Option<String> {
    ["error", "message"]
        .iter()
        .find_map(|field| json.get(*field).and_then(Value::as_str))
        .map(clean_text)
        .filter(|text| !text.is_empty())
}

/// A short, printable account of a failed answer's body.
fn error_text(answer: &Answer<'_>) -> String {
    if let Ok(json) = answer_json(answer.body) {
        return json_error_text(&json).unwrap_or_else(|| "no error message".into());
    }
    let text = String::from_utf8_lossy(answer.body);
    if looks_like_html(answer) {
        if let Some(title) = html_title(&text) {
            return clean_text(title);
        }
        return clean_text(&strip_tags(&text));
    }
    let cleaned = clean_text(&text);
    if cleaned.is_empty() {
        "empty answer".into()
    } else {
        cleaned
    }
}

fn looks_like_html(answer: &Answer<'_>) -> bool {
    answer
        .content_type
        .is_some_and(|t| t.to_ascii_lowercase().contains("html"))
        || answer.body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
}

fn html_title(html: &str) -> Option<&str> {
    let lower = html.to_ascii_lowercase();
    let start = lower.find("<title")?;
    let content_start = start + lower[start..].find('>')? + 1;
    let content_end = content_start + lower[content_start..].find("</title")?;
    Some(&html[content_start..content_end])
}

fn strip_tags(html: &str) -> String {
    let mut text = String::with_capacity(html.len().min(4096));
    let mut in_tag = false;
    for c in html.chars().take(4096) {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

/// Text from outside, made safe to store and show: no control characters, whitespace folded,
/// at most [`MAX_ERROR_CHARS`] characters.
pub fn clean_text(text: &str) -> String {
    let mut cleaned = String::new();
    let mut chars = 0;
    for word in text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
    {
        if !cleaned.is_empty() {
            cleaned.push(' ');
            chars += 1;
        }
        for c in word.chars() {
            if chars >= MAX_ERROR_CHARS {
                cleaned.push('…');
                return cleaned;
            }
            cleaned.push(c);
            chars += 1;
        }
    }
    cleaned
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Up to a quarter of a `Retry-After` (at most 2 s) more, per company: the run's requests held
/// back by one 429 do not all come back at the same instant.
pub fn retry_after_jitter(after: Duration, company_id: &str) -> Duration {
    let fraction = (RandomState::new().hash_one((company_id, after)) % 1000) as f64 / 1000.0;
    (after / 4).min(MAX_RETRY_AFTER_JITTER).mul_f64(fraction)
}

/// Exponential backoff with jitter: 0.5 s, 1 s, 2 s ... capped at 30 s, each scaled by a random
/// factor in [0.5, 1) so that companies failing together do not retry together.
pub fn backoff(retries_done: u32, company_id: &str) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << retries_done.min(16))
        .min(MAX_BACKOFF);
    let fraction = (RandomState::new().hash_one((company_id, retries_done)) % 1000) as f64 / 1000.0;
    base.mul_f64(0.5 + fraction / 2.0)
}

/// Names the failure without the URL (reqwest's own text embeds it) and without the request.
/// What a failed connection, or a body cut off, says in a company's error.
fn transport_error(error: &reqwest::Error) -> String {
    let cause = clean_text(&root_cause(error));
    if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        format!("could not connect: {cause}")
    } else {
        format!("connection failed: {cause}")
    }
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}

fn describe_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: &str = "https://app.example.test";

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_not_ignored() {
        for pem in [&b""[..], b"\n", b"not a certificate\n"] {
            let refused = build_client(Duration::from_secs(1), 1, Some(pem)).err();
            assert!(
                refused.is_some_and(|reason| reason.contains("PEM certificate in it")),
                "{pem:?}"
            );
        }
    }

    fn answer<'a>(content_type: Option<&'a str>, body: &'a str) -> Answer<'a> {
        Answer {
            content_type,
            retry_after: None,
            location: None,
            body: body.as_bytes(),
        }
    }

    fn classify_json(status: u16, body: &str) -> PageAnswer {
        classify(
            status,
            &answer(Some("application/json"), body),
            SITE,
            SystemTime::now(),
        )
    }

    #[test]
    fn site_urls_are_checked() {
        assert!(validate_site_url("https://your-app.pages.dev").is_ok());
        assert!(validate_site_url("http://127.0.0.1:8080/").is_ok());
        assert!(validate_site_url("ftp://example.com")
            .unwrap_err()
            .contains("http or https"));
        assert!(validate_site_url("not a url").is_err());
        assert!(validate_site_url("https://user:pw@example.com")
            .unwrap_err()
            .contains("credentials"));
        assert!(validate_site_url("https://example.com/?a=1")
            .unwrap_err()
            .contains("base URL"));
    }

    #[test]
    fn urls_carry_paging() {
        assert_eq!(
            collect_url("https://a.test/", None),
            "https://a.test/api/dex/collect-bulk"
        );
        let page = NextPage {
            limit: Some(15),
            offset: 30,
        };
        assert_eq!(
            collect_url("https://a.test", Some(&page)),
            "https://a.test/api/dex/collect-bulk?limit=15&offset=30"
        );
    }

    #[test]
    fn collected_answers_count_records_and_default_to_zero() {
        let full = classify_json(
            200,
            r#"{"success":true,"recordsCount":12,"machinesUpdated":3,"message":"ok"}"#,
        );
        assert_eq!(
            full,
            PageAnswer::Collected {
                records: 12,
                machines: 3,
                next: None
            }
        );
        let nothing = classify_json(
            200,
            r#"{"success":true,"message":"No new DEX data available"}"#,
        );
        assert_eq!(
            nothing,
            PageAnswer::Collected {
                records: 0,
                machines: 0,
                next: None
            }
        );
    }

    #[test]
    fn batching_gives_the_next_page() {
        let body = r#"{"success":true,"recordsCount":15,"machinesUpdated":4,"errors":["x"],
            "batching":{"limit":15,"offset":0,"totalAvailable":40,"hasMore":true,"nextOffset":15}}"#;
        assert_eq!(
            classify_json(200, body),
            PageAnswer::Collected {
                records: 15,
                machines: 4,
                next: Some(NextPage {
                    limit: Some(15),
                    offset: 15
                })
            }
        );
        let last = r#"{"success":true,"recordsCount":10,"batching":{"limit":15,"offset":30,"hasMore":false}}"#;
        assert_eq!(
            classify_json(200, last),
            PageAnswer::Collected {
                records: 10,
                machines: 0,
                next: None
            }
        );
        let no_next = r#"{"success":true,"recordsCount":1,"batching":{"limit":15,"offset":15,"hasMore":true}}"#;
        assert_eq!(
            classify_json(200, no_next),
            PageAnswer::Collected {
                records: 1,
                machines: 0,
                next: Some(NextPage {
                    limit: Some(15),
                    offset: 30
                })
            }
        );
    }

    #[test]
    fn failures_keep_the_error_and_drop_the_stack() {
        let failed_login = classify_json(
            200,
            r#"{"success":false,"error":"Cantaloupe login failed"}"#,
        );
        assert_eq!(failed_login, failed("Cantaloupe login failed", Retry::No));
        let server = classify_json(
            500,
            r#"{"success":false,"error":"db timeout","stack":"at x.js:1","details":"d"}"#,
        );
        assert_eq!(server, failed("HTTP 500: db timeout", Retry::No));
        let stack_only =
            classify_json(500, r#"{"success":false,"stack":"SECRET STACK at x.js:1"}"#);
        let PageAnswer::Failed { error, .. } = stack_only else {
            panic!("500 must fail")
        };
        assert!(!error.contains("STACK"), "{error}");
        let bad_request = classify_json(
            400,
            r#"{"success":false,"error":"No DEX credentials configured"}"#,
        );
        assert_eq!(
            bad_request,
            failed("HTTP 400: No DEX credentials configured", Retry::No)
        );
    }

    #[test]
    fn auth_and_transient_statuses() {
        assert_eq!(
            classify_json(401, r#"{"error":"Unauthorized"}"#),
            failed(
                "service key rejected by the endpoint (HTTP 401)",
                Retry::AuthRejected
            )
        );
        for status in [502, 503, 504] {
            let PageAnswer::Failed { retry, .. } = classify(
                status,
                &answer(Some("text/html"), "<html>x</html>"),
                SITE,
                SystemTime::now(),
            ) else {
                panic!("{status} must fail")
            };
            assert_eq!(retry, Retry::Later(None));
        }
        let limited = Answer {
            content_type: None,
            retry_after: Some("7"),
            location: None,
            body: b"",
        };
        assert_eq!(
            classify(429, &limited, SITE, SystemTime::now()),
            failed(
                "HTTP 429: empty answer",
                Retry::Later(Some(Duration::from_secs(7)))
            )
        );
        assert_eq!(
            classify_json(405, r#"{"error":"Method not allowed"}"#),
            failed("HTTP 405: Method not allowed", Retry::No)
        );
    }

    #[test]
    fn html_and_invalid_json_are_failures() {
        let html = classify(
            200,
            &answer(
                Some("text/html"),
                "<html><head><title>Application error</title></head></html>",
            ),
            SITE,
            SystemTime::now(),
        );
        assert_eq!(
            html,
            failed(
                "HTTP 200 with an HTML page instead of JSON: Application error",
                Retry::No
            )
        );
        let PageAnswer::Failed { error, retry } =
            classify_json(200, r#"{"success":true,"recordsCou"#)
        else {
            panic!("truncated JSON must fail")
        };
        assert!(error.starts_with("HTTP 200 with invalid JSON"), "{error}");
        assert_eq!(retry, Retry::No);
        let no_success = classify_json(200, r#"{"recordsCount":3}"#);
        assert!(matches!(no_success, PageAnswer::Failed { .. }));
    }

    /// JavaScript's `JSON.stringify` writes a string cut in the middle of an emoji with a lone
    /// surrogate escape: the answer is read, that character as U+FFFD.
    #[test]
    fn a_lone_surrogate_escape_fails_no_answer() {
        let collected = classify_json(
            200,
            concat!(
                r#"{"success":true,"recordsCount":15,"machinesUpdated":2,"#,
                r#""errors":["machine 7 \ud83d"],"message":"\udE00 done \uD83D\uDE00"}"#
            ),
        );
        assert_eq!(
            collected,
            PageAnswer::Collected {
                records: 15,
                machines: 2,
                next: None
            }
        );
        assert_eq!(
            classify_json(200, r#"{"success":false,"error":"Cantaloupe said \uD83D"}"#),
            failed("Cantaloupe said \u{FFFD}", Retry::No)
        );
        assert_eq!(
            classify_json(500, r#"{"error":"\ud83d\u0041 and \\ud83d"}"#),
            failed("HTTP 500: \u{FFFD}A and \\ud83d", Retry::No)
        );
        assert_eq!(
            replace_lone_surrogates(br#"{"a":"\\ud83d \uD83D\uDE00"}"#),
            None
        );
        let PageAnswer::Failed { error, .. } = classify_json(200, r#"{"success":true,"x":"\ud83d"#)
        else {
            panic!("truncated JSON must fail")
        };
        assert!(error.starts_with("HTTP 200 with invalid JSON"), "{error}");
    }

    #[test]
    fn redirects_name_the_origin_only() {
        let moved = Answer {
            content_type: None,
            retry_after: None,
            location: Some("http://127.0.0.1:9/elsewhere?token=abc"),
            body: b"",
        };
        assert_eq!(
            classify(307, &moved, SITE, SystemTime::now()),
            failed(
                "HTTP 307: redirected to http://127.0.0.1:9; redirects are not followed",
                Retry::No
            )
        );
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        for retries_done in 0..20 {
            let base = FIRST_BACKOFF
                .saturating_mul(1u32 << retries_done.min(16))
                .min(MAX_BACKOFF);
            let wait = backoff(retries_done, "c");
            assert!(wait >= base / 2 && wait < base, "{retries_done}: {wait:?}");
        }
    }

    #[test]
    fn a_retry_after_adds_up_to_a_quarter_of_it_and_at_most_two_seconds() {
        for (after, most) in [
            (Duration::from_secs(2), Duration::from_millis(500)),
            (Duration::from_secs(60), MAX_RETRY_AFTER_JITTER),
            (Duration::ZERO, Duration::ZERO),
        ] {
            let waits: Vec<Duration> = (0..200)
                .map(|company| retry_after_jitter(after, &company.to_string()))
                .collect();
            assert!(
                waits.iter().all(|wait| *wait <= most),
                "{after:?}: {waits:?}"
            );
            // Spread over that part, not one value for every company.
            let spread = waits.iter().max().copied().unwrap_or_default()
                - waits.iter().min().copied().unwrap_or_default();
            assert!(spread >= most / 2, "{after:?}: {waits:?}");
        }
    }

    #[test]
    fn text_from_outside_is_cleaned_and_bounded() {
        assert_eq!(clean_text("a\u{0}b\r\n\tc  d\u{1b}[31m"), "a b c d [31m");
        let long = "x".repeat(5000);
        let cleaned = clean_text(&long);
        assert_eq!(cleaned.chars().count(), MAX_ERROR_CHARS + 1);
        assert!(cleaned.ends_with('…'));
    }
}
