//! What the collector tells the outside, over HTTP: an event to a webhook (a body a Slack or
//! Discord incoming webhook shows as it is, signed as Stripe signs its deliveries), and a
//! heartbeat ping per finished run (healthchecks.io's convention: the URL, or the URL with
//! `/fail`). Delivery itself, retries and order are the caller's (the worker's outbox).

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::fan_out::Http;

/// The header that carries the Unix time the signature covers.
pub const TIMESTAMP_HEADER: &str = "X-Dex-Collector-Timestamp";
/// The header that carries `v1=` and the hex HMAC-SHA256 of `timestamp.body`.
pub const SIGNATURE_HEADER: &str = "X-Dex-Collector-Signature";

/// One line a person reads first: what happened, to whom, and why.
pub fn alert_text(event: &Value) -> String {
    let text = |key: &str| event[key].as_str().unwrap_or_default().to_string();
    let detail = |key: &str| &event["details"][key];
    let company = event["company_name"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| text("company_id"));
    let error = detail("error")
        .as_str()
        .map(|error| format!(": {error}"))
        .unwrap_or_default();
    let run = event["run_id"].as_i64().unwrap_or_default();
    match text("kind").as_str() {
        "failing" => format!(
            "dex_collector: {company} is failing ({} failures in a row){error}",
            detail("consecutive_failures").as_i64().unwrap_or_default()
        ),
        "recovered" => format!("dex_collector: {company} recovered: collected again"),
        "skipped" => format!("dex_collector: {company} is skipped{error}"),
        "collectable" => format!("dex_collector: {company} is collectable again"),
        "run_failed" => format!("dex_collector: run {run} failed{error}"),
        "run_cut_short" => format!(
            "dex_collector: run {run} was cut short by {}: {} of {} companies not reached",
            // A SQL call also stops early for its statement or transaction timeout.
            match detail("trigger").as_str() {
                Some("worker" | "async") => "dex_collector.run_deadline",
                _ => "its deadline (dex_collector.run_deadline, or the call's statement or transaction timeout)",
            },
            detail("companies_not_reached").as_i64().unwrap_or_default(),
            detail("companies_total").as_i64().unwrap_or_default()
        ),
        "stale" => {
            // No run at all: an installation whose scheduled calls have failed from the first.
            let since = match event["run_id"].as_i64() {
                Some(run) => format!(
                    "since {} (run {run})",
                    text_of(detail("last_run_started_at"))
                ),
                None => "yet".to_string(),
            };
            format!(
                "dex_collector: no run has started {since}, and runs are meant to start every {}",
                every(detail("expected_every_seconds"))
            )
        }
        "fresh" => format!(
            "dex_collector: runs start on schedule again (run {run} started at {})",
            text_of(detail("last_run_started_at"))
        ),
        other => format!("dex_collector: {other} ({company})"),
    }
}

fn text_of(value: &Value) -> &str {
    value.as_str().unwrap_or("?")
}

/// An interval in seconds as a person writes it: `5 minutes`, `90 seconds`, `1 day`.
fn every(seconds: &Value) -> String {
    let Some(seconds) = seconds.as_f64().filter(|s| s.is_finite() && *s >= 1.0) else {
        return "?".into();
    };
    let seconds = seconds.round() as u64;
    let (count, unit) = [(86_400, "day"), (3_600, "hour"), (60, "minute")]
        .into_iter()
        .find(|(length, _)| seconds.is_multiple_of(*length))
        .map_or((seconds, "second"), |(length, unit)| {
            (seconds / length, unit)
        });
    format!("{count} {unit}{}", if count == 1 { "" } else { "s" })
}

/// The most Discord shows of a message's `content`; a longer one is refused with a 400.
const DISCORD_CONTENT_CHARS: usize = 2000;

/// The webhook's body, one JSON object: `text` first (Slack's message, in its markup: `&`, `<` and
/// `>` escaped, so that a company's name cannot mention `<!channel>` or disguise a link), then
/// `content` and `allowed_mentions` (Discord's message, its markdown escaped for the same reason,
/// and mentioning no one: Discord refuses a body without `content`), then the event's own fields.
/// Each receiver ignores the others' fields.
pub fn webhook_body(event: &Value) -> String {
    let line = alert_text(event);
    let content: String = discord_escaped(&line)
        .chars()
        .take(DISCORD_CONTENT_CHARS)
        .collect();
    let mut body = format!(
        "{{\"text\":{},\"content\":{},\"allowed_mentions\":{{\"parse\":[]}}",
        Value::String(slack_escaped(&line)),
        Value::String(content)
    );
    if let Some(fields) = event.as_object().filter(|fields| !fields.is_empty()) {
        let rest = Value::Object(fields.clone()).to_string();
        // `rest` is `{...}`: its members follow the messages'.
        body.push(',');
        body.push_str(&rest[1..]);
    } else {
        body.push('}');
    }
    body
}

/// Text in which Discord's markdown makes no link and no mention: a backslash before `[` and `]`
/// (a masked link, `[text](url)`), `<` and `>` (`<@id>`, `<#channel>`) and the backslash itself.
/// Emphasis is left alone: it changes how the line looks, not where it leads, and escaping `_` or
/// `*` would break the URLs an error may hold (Discord links them with the backslashes in).
fn discord_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if "\\[]<>".contains(character) {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// Text as Slack's markup reads it literally.
fn slack_escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `v1=` and the hex HMAC-SHA256, under `secret`, of `timestamp`, a dot, and `body`.
pub fn signature(secret: &[u8], timestamp: u64, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        // HMAC takes a key of any length; this branch is never taken.
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1={}", hex(&mac.finalize().into_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A webhook's or a heartbeat's URL: http or https, with a host, no credentials and no fragment
/// (a path and a query are its own business: Slack's and healthchecks.io's carry a token there).
pub fn validate_delivery_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(format!(
            "scheme must be http or https, not \"{}\"",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("credentials do not belong in the URL".into());
    }
    if parsed.fragment().is_some() {
        return Err("a #fragment is never sent".into());
    }
    Ok(())
}

/// The heartbeat's URL for a run: as set for one that succeeded; for one that did not, with a
/// path segment `fail` added (before the query, which healthchecks.io's slug URLs may carry).
pub fn heartbeat_url(base: &str, succeeded: bool) -> String {
    if succeeded {
        return base.to_string();
    }
    let Ok(mut url) = reqwest::Url::parse(base) else {
        // Delivery URLs are checked when set; one that is not a URL cannot be sent to anyway.
        return format!("{}/fail", base.trim_end_matches('/'));
    };
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push("fail");
    }
    url.to_string()
}

/// Why a delivery did not arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// The receiver answered, with a status other than 2xx.
    Status(u16),
    /// No answer: connection, TLS, timeout.
    Transport(String),
    /// The caller was interrupted while it waited; the request was abandoned.
    Interrupted,
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeliveryError::Status(status) => write!(f, "HTTP {status}"),
            DeliveryError::Transport(reason) => f.write_str(reason),
            DeliveryError::Interrupted => f.write_str("interrupted"),
        }
    }
}

impl DeliveryError {
    /// The receiver refused this request for good: a 3xx (redirects are not followed, so it
    /// would answer the same) or a 4xx other than 408 (timeout) and 429 (too many requests).
    /// Sent again, it would be refused again (a payload it cannot read, a webhook deleted, a
    /// signature it rejects, a URL that moved), and kept in order it would hold back every event
    /// after it.
    pub fn is_refusal(&self) -> bool {
        matches!(self, DeliveryError::Status(status)
            if (300..500).contains(status) && *status != 408 && *status != 429)
    }
}

/// How often a waiting delivery asks whether its caller is interrupted.
const INTERRUPT_POLL: Duration = Duration::from_millis(20);

impl Http {
    /// POSTs `body` (JSON) to `url` with `headers`, within `timeout`; `Ok` for a 2xx answer.
    /// Driven on the caller's thread in short steps, `interrupted` asked between them.
    pub fn post_json(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: String,
        timeout: Duration,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<(), DeliveryError> {
        // The client is kept between the worker's turns, as between runs.
        self.drop_closed_connections();
        // reqwest arms the request's timer as it is built: inside the runtime.
        let _runtime = self.runtime().enter();
        let mut request = self
            .client()
            .post(url)
            .timeout(timeout)
            .header("Content-Type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut sending = Box::pin(request.send());
        loop {
            let step = self.runtime().block_on(async {
                tokio::select! {
                    answer = &mut sending => Some(answer),
                    () = tokio::time::sleep(INTERRUPT_POLL) => None,
                }
            });
            match step {
                Some(Ok(response)) if response.status().is_success() => return Ok(()),
                Some(Ok(response)) => {
                    return Err(DeliveryError::Status(response.status().as_u16()))
                }
                Some(Err(error)) => return Err(DeliveryError::Transport(transport_reason(&error))),
                None if interrupted() => return Err(DeliveryError::Interrupted),
                None => {}
            }
        }
    }
}

/// A request error in a few words, without the URL (which may hold a token).
fn transport_reason(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(error);
    let mut innermost = None;
    while let Some(cause) = source {
        innermost = Some(cause.to_string());
        source = cause.source();
    }
    match innermost {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_signature_covers_timestamp_dot_body() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        let expected = hex(&mac.finalize().into_bytes());
        assert_eq!(
            signature(b"secret", 1_700_000_000, "{\"a\":1}"),
            format!("v1={expected}")
        );
        assert_ne!(
            signature(b"secret", 1_700_000_001, "{\"a\":1}"),
            signature(b"secret", 1_700_000_000, "{\"a\":1}")
        );
    }

    #[test]
    fn the_body_starts_with_the_text_and_keeps_every_field() {
        let event = serde_json::json!({
            "id": 17, "kind": "failing", "company_id": "a0", "company_name": "Acme Vending",
            "run_id": 4211, "details": {"consecutive_failures": 3, "error": "HTTP 500: boom"}
        });
        let body = webhook_body(&event);
        assert!(
            body.starts_with(
                r#"{"text":"dex_collector: Acme Vending is failing (3 failures in a row): HTTP 500: boom","#
            ),
            "{body}"
        );
        let parsed: Value = serde_json::from_str(&body).unwrap();
        for (key, value) in event.as_object().unwrap() {
            assert_eq!(&parsed[key], value);
        }
        assert_eq!(
            parsed["content"],
            "dex_collector: Acme Vending is failing (3 failures in a row): HTTP 500: boom"
        );
        assert_eq!(parsed["allowed_mentions"], serde_json::json!({"parse": []}));
    }

    #[test]
    fn a_company_name_mentions_no_one_and_links_nowhere() {
        let event = serde_json::json!({
            "id": 1, "kind": "recovered", "company_name": "<!channel> & <https://x.test|Login>"
        });
        let parsed: Value = serde_json::from_str(&webhook_body(&event)).unwrap();
        assert_eq!(
            parsed["text"],
            "dex_collector: &lt;!channel&gt; &amp; &lt;https://x.test|Login&gt; recovered: collected again"
        );
        // Discord reads markdown, not Slack's markup: a link in it is escaped, and it mentions
        // no one.
        assert_eq!(
            parsed["content"],
            r"dex_collector: \<!channel\> & \<https://x.test|Login\> recovered: collected again"
        );
        let masked =
            serde_json::json!({"kind": "recovered", "company_name": "[Log in](https://x.test)"});
        let masked: Value = serde_json::from_str(&webhook_body(&masked)).unwrap();
        assert_eq!(
            masked["content"],
            r"dex_collector: \[Log in\](https://x.test) recovered: collected again"
        );
        assert_eq!(parsed["allowed_mentions"]["parse"], serde_json::json!([]));
        assert_eq!(parsed["company_name"], event["company_name"]);
    }

    #[test]
    fn a_url_in_an_error_stays_a_url_for_discord() {
        let url = "https://my-app.pages.dev/api/dex_collect-bulk?x=1*2";
        let event = serde_json::json!({"kind": "run_failed", "run_id": 3,
                                       "details": {"error": format!("see {url}")}});
        let parsed: Value = serde_json::from_str(&webhook_body(&event)).unwrap();
        assert!(
            parsed["content"].as_str().unwrap().ends_with(url),
            "{parsed}"
        );
    }

    #[test]
    fn discord_gets_at_most_its_2000_characters() {
        let event = serde_json::json!({
            "kind": "run_failed", "run_id": 3, "details": {"error": "é".repeat(3000)}
        });
        let parsed: Value = serde_json::from_str(&webhook_body(&event)).unwrap();
        assert_eq!(parsed["content"].as_str().unwrap().chars().count(), 2000);
        assert!(parsed["text"].as_str().unwrap().chars().count() > 3000);
    }

    #[test]
    fn an_event_without_fields_is_still_a_message() {
        let parsed: Value = serde_json::from_str(&webhook_body(&serde_json::json!({}))).unwrap();
        assert_eq!(parsed.as_object().unwrap().len(), 3, "{parsed}");
    }

    #[test]
    fn a_redirect_or_a_client_error_other_than_408_and_429_is_a_refusal() {
        for status in [301, 302, 307, 400, 401, 403, 404, 410, 413, 422] {
            assert!(DeliveryError::Status(status).is_refusal(), "{status}");
        }
        for status in [204, 408, 429, 500, 502, 503] {
            assert!(!DeliveryError::Status(status).is_refusal(), "{status}");
        }
        assert!(!DeliveryError::Transport("timed out".into()).is_refusal());
        assert!(!DeliveryError::Interrupted.is_refusal());
    }

    #[test]
    fn every_kind_reads_as_a_sentence() {
        let texts: Vec<String> = [
            serde_json::json!({"kind": "recovered", "company_name": "Beta"}),
            serde_json::json!({"kind": "skipped", "company_name": "Delta",
                               "details": {"error": "No DEX credentials configured"}}),
            serde_json::json!({"kind": "collectable", "company_id": "a4"}),
            serde_json::json!({"kind": "run_failed", "run_id": 9,
                               "details": {"error": "the endpoint rejected the service key"}}),
            serde_json::json!({"kind": "run_cut_short", "run_id": 9,
                               "details": {"companies_not_reached": 12, "companies_total": 1000,
                                           "trigger": "worker"}}),
            serde_json::json!({"kind": "run_cut_short", "run_id": 9,
                               "details": {"companies_not_reached": 12, "companies_total": 1000,
                                           "trigger": "pg_cron"}}),
            serde_json::json!({"kind": "stale", "run_id": 9,
                               "details": {"last_run_started_at": "2026-12-02T09:20:04.12+00:00",
                                           "expected_every": "00:05:00",
                                           "expected_every_seconds": 300}}),
            serde_json::json!({"kind": "stale", "run_id": 9,
                               "details": {"last_run_started_at": "2026-12-02T09:20:04.12+00:00",
                                           "expected_every": "00:01:30",
                                           "expected_every_seconds": 90.0}}),
            serde_json::json!({"kind": "stale", "run_id": null,
                               "details": {"last_run_started_at": null,
                                           "expected_every": "1 day",
                                           "expected_every_seconds": 86400.0}}),
            serde_json::json!({"kind": "fresh", "run_id": 10,
                               "details": {"last_run_started_at": "2026-12-02T10:00:00+00:00"}}),
        ]
        .iter()
        .map(alert_text)
        .collect();
        assert_eq!(
            texts,
            [
                "dex_collector: Beta recovered: collected again",
                "dex_collector: Delta is skipped: No DEX credentials configured",
                "dex_collector: a4 is collectable again",
                "dex_collector: run 9 failed: the endpoint rejected the service key",
                "dex_collector: run 9 was cut short by dex_collector.run_deadline: 12 of 1000 companies not reached",
                "dex_collector: run 9 was cut short by its deadline (dex_collector.run_deadline, or the call's statement or transaction timeout): 12 of 1000 companies not reached",
                "dex_collector: no run has started since 2026-12-02T09:20:04.12+00:00 (run 9), and runs are meant to start every 5 minutes",
                "dex_collector: no run has started since 2026-12-02T09:20:04.12+00:00 (run 9), and runs are meant to start every 90 seconds",
                "dex_collector: no run has started yet, and runs are meant to start every 1 day",
                "dex_collector: runs start on schedule again (run 10 started at 2026-12-02T10:00:00+00:00)",
            ]
        );
    }

    #[test]
    fn delivery_urls_are_http_with_a_host_and_no_credentials() {
        assert!(validate_delivery_url("https://hooks.slack.com/services/T0/B0/abc").is_ok());
        assert!(validate_delivery_url("https://discord.com/api/webhooks/1/x?wait=true").is_ok());
        assert!(validate_delivery_url("ftp://example.com/x").is_err());
        assert!(validate_delivery_url("https://user:pw@example.com/x").is_err());
        assert!(validate_delivery_url("https://example.com/x#top").is_err());
        assert!(validate_delivery_url("not a url").is_err());
    }

    #[test]
    fn a_failed_run_pings_the_fail_url() {
        assert_eq!(
            heartbeat_url("https://hc-ping.com/abc", true),
            "https://hc-ping.com/abc"
        );
        assert_eq!(
            heartbeat_url("https://hc-ping.com/abc", false),
            "https://hc-ping.com/abc/fail"
        );
        assert_eq!(
            heartbeat_url("https://hc-ping.com/abc/", false),
            "https://hc-ping.com/abc/fail"
        );
        // healthchecks.io's slug URLs: `fail` goes in the path, not after the query.
        assert_eq!(
            heartbeat_url("https://hc-ping.com/key/nightly?create=1", false),
            "https://hc-ping.com/key/nightly/fail?create=1"
        );
        assert_eq!(
            heartbeat_url("https://hc-ping.com/key/nightly?create=1", true),
            "https://hc-ping.com/key/nightly?create=1"
        );
    }
}
