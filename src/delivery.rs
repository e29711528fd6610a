//! What the background worker sends out, between its other work (a collection in another
//! session never waits for it; the worker's own runs by a few seconds at most):
//! each event to the webhook (`dex_collector.alert_url`), oldest first, each until the receiver
//! takes it — an outbox in `dex_collector.events`, so a restart or a failover loses nothing and
//! a receiver down for a day gets every event afterwards, in order, at least once (the same
//! `Idempotency-Key` each time) — and a heartbeat ping per finished run
//! (`dex_collector.heartbeat_url`; `/fail` appended after a failed run).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dex_collector_core::alert::{
    heartbeat_url, signature, webhook_body, DeliveryError, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use dex_collector_core::fan_out::Http;

use crate::outbox;
use crate::pg;
use crate::settings::DeliveryTargets;

/// One request's limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one turn of the worker's loop may spend sending: no request starts after it, so a
/// slow receiver delays the worker's own runs (queued or on its interval) by at most about this
/// plus one request. What is left goes in the next turns.
const TURN_BUDGET: Duration = Duration::from_secs(5);

/// The worker's sender: its HTTP client, and the last run it pinged the heartbeat for.
#[derive(Default)]
pub struct Deliveries {
    http: Option<(Http, ClientFor)>,
    last_pinged_run: Option<i64>,
}

/// What a kept client was built for.
#[derive(PartialEq)]
struct ClientFor {
    connect_timeout: Duration,
    ca_file: Option<String>,
}

impl Deliveries {
    /// One turn: the due events to the webhook, then a ping for each run finished since the last
    /// turn. Returns the problems met (each is retried on a later turn).
    pub fn turn(&mut self) -> Result<(), String> {
        let until = Instant::now() + TURN_BUDGET;
        let targets = in_transaction(DeliveryTargets::load)?;
        if targets.alert_url.is_none() && targets.heartbeat_url.is_none() {
            self.last_pinged_run = None;
            return Ok(());
        }
        let http = self.http_for(&targets)?;
        if let Some(url) = &targets.alert_url {
            send_events(http, url, targets.alert_secret.as_deref(), until)?;
        }
        match &targets.heartbeat_url {
            Some(url) => self.ping_finished_runs(url, until),
            None => {
                self.last_pinged_run = None;
                Ok(())
            }
        }
    }

    fn http_for(&mut self, targets: &DeliveryTargets) -> Result<&Http, String> {
        let wanted = ClientFor {
            connect_timeout: targets.connect_timeout,
            ca_file: targets.ca_file.clone(),
        };
        if self
            .http
            .as_ref()
            .is_none_or(|(_, built_for)| *built_for != wanted)
        {
            if let Some((old, _)) = self.http.take() {
                old.shut_down();
            }
            let ca_pem = match &wanted.ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    format!("unusable dex_collector.ca_file: cannot read {path}: {e}")
                })?),
                None => None,
            };
            let http = Http::new(
                wanted.connect_timeout,
                2,
                ca_pem.as_deref(),
                pg::block_all_signals,
            )
            .map_err(|e| format!("could not start the HTTP client for alerts: {e:?}"))?;
            self.http = Some((http, wanted));
        }
        match &self.http {
            Some((http, _)) => Ok(http),
            None => Err("the HTTP client for alerts was not kept".into()),
        }
    }

    /// Pings for the runs finished since the last ping; the first turn starts from the latest
    /// finished run, so that a (re)started worker does not ping the past. A ping that fails is
    /// not repeated: the next run's ping says the same.
    fn ping_finished_runs(&mut self, url: &str, until: Instant) -> Result<(), String> {
        let Some(after) = self.last_pinged_run else {
            self.last_pinged_run = Some(in_transaction(outbox::latest_finished_run)?.unwrap_or(0));
            return Ok(());
        };
        let runs = in_transaction(|| outbox::finished_runs_after(after))?;
        let Some((http, _)) = &self.http else {
            return Ok(());
        };
        let mut failed = None;
        for (run_id, succeeded) in runs {
            if Instant::now() >= until {
                break;
            }
            self.last_pinged_run = Some(run_id);
            let body = serde_json::json!({"run_id": run_id, "succeeded": succeeded}).to_string();
            if let Err(error) = post(http, &heartbeat_url(url, succeeded), &[], body) {
                failed = Some(format!("the heartbeat for run {run_id} failed: {error}"));
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

/// The due events, oldest first, until one is not taken (the order is kept: none overtakes it).
fn send_events(http: &Http, url: &str, secret: Option<&str>, until: Instant) -> Result<(), String> {
    while Instant::now() < until {
        let Some(pending) = in_transaction(outbox::oldest_undelivered)? else {
            return Ok(());
        };
        if !pending.due {
            return Ok(());
        }
        let body = webhook_body(&pending.event);
        let mut headers = vec![("Idempotency-Key", pending.idempotency_key.clone())];
        if let Some(secret) = secret {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            headers.push((TIMESTAMP_HEADER, now.to_string()));
            headers.push((SIGNATURE_HEADER, signature(secret.as_bytes(), now, &body)));
        }
        let sent = post(http, url, &headers, body);
        if sent == Err(DeliveryError::Interrupted) {
            return Ok(());
        }
        let failure = sent.as_ref().err().map(ToString::to_string);
        in_transaction(|| outbox::record_attempt(pending.id, failure.as_deref()))?;
        if let Some(failure) = failure {
            return Err(format!(
                "event {} could not be delivered to dex_collector.alert_url: {failure}",
                pending.id
            ));
        }
    }
    Ok(())
}

fn post(
    http: &Http,
    url: &str,
    headers: &[(&str, String)],
    body: String,
) -> Result<(), DeliveryError> {
    http.post_json(url, headers, body, REQUEST_TIMEOUT, &pg::interrupt_pending)
}

/// `work` in a transaction of the worker's own; any error becomes its text.
fn in_transaction<T, E: std::fmt::Display>(
    work: impl FnOnce() -> Result<T, E> + std::panic::UnwindSafe,
) -> Result<T, String> {
    pg::in_transaction(work)?.map_err(|error| error.to_string())
}
