//! What the collector tells the outside, over HTTP: an event to a webhook (a body a Slack or
//! Discord incoming webhook shows as it is, signed like GitHub's and Stripe's deliveries), and a
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
            "dex_collector: run {run} was cut short by dex_collector.run_deadline: {} of {} companies not reached",
            detail("companies_not_reached").as_i64().unwrap_or_default(),
            detail("companies_total").as_i64().unwrap_or_default()
        ),
        other => format!("dex_collector: {other} ({company})"),
    }
}

/// The webhook's body: `{"text": ...}` first, then the event's own fields, as one JSON object.
pub fn webhook_body(event: &Value) -> String {
    let text = Value::String(alert_text(event)).to_string();
    match event.as_object() {
        Some(fields) if !fields.is_empty() => {
            let rest = Value::Object(fields.clone()).to_string();
            // `rest` is `{...}`: splice the text in as the first member.
            format!("{{\"text\":{text},{}", &rest[1..])
        }
        _ => format!("{{\"text\":{text}}}"),
    }
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

/// The heartbeat's URL for a run: as set for one that succeeded, with `/fail` for one that did not.
pub fn heartbeat_url(base: &str, succeeded: bool) -> String {
    if succeeded {
        base.to_string()
    } else {
        format!("{}/fail", base.trim_end_matches('/'))
    }
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
                               "details": {"companies_not_reached": 12, "companies_total": 1000}}),
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
    }
}
