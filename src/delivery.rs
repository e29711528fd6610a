//! What the background worker sends out, between its other work (a collection in another
//! session never waits for it; the worker's own runs by a few seconds at most):
//! each event to the webhook (`dex_collector.alert_url`), oldest first, each until the receiver
//! takes it — an outbox in `dex_collector.events`, so a restart or a failover loses nothing and
//! a receiver down for a day gets every event afterwards, in order, at least once (the same
//! `Idempotency-Key` each time) — and a heartbeat ping per finished run
//! (`dex_collector.heartbeat_url`; a path segment `fail` added after a failed run).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dex_collector_core::alert::{
    heartbeat_url, signature, webhook_body, DeliveryError, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use dex_collector_core::fan_out::Http;
use dex_collector_core::pings::PingProgress;

use crate::error::CollectError;
use crate::outbox::{self, Attempt, REFUSALS_BEFORE_ABANDONING};
use crate::pg;
use crate::run;
use crate::settings::{CaFile, ConfigError, DeliveryTargets};

/// One request's limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one turn of the worker's loop may spend sending: no request starts after it, so a
/// slow receiver delays the worker's own runs (queued or on its interval) by at most about this
/// plus one request. What is left goes in the next turns.
const TURN_BUDGET: Duration = Duration::from_secs(5);

/// The worker's sender: its HTTP client, where its heartbeat pings have got to, and an attempt
/// still to be recorded.
pub struct Deliveries {
    http: Option<(Http, ClientFor)>,
    pings: Pings,
    /// An event's attempt that could not be recorded (the database read-only, its disk full):
    /// recorded before any event is sent again. Otherwise the event, its delivery or its backoff
    /// unrecorded, would be due again, and go to the receiver once a turn while it lasts.
    unrecorded: Option<(i64, Attempt)>,
    /// The webhook URL of the last turn that sent events: when it changes, what is waiting is
    /// offered to the new one at once.
    alert_url: Option<String>,
}

/// What a kept client was built for.
#[derive(PartialEq)]
struct ClientFor {
    connect_timeout: Duration,
    ca_file: Option<CaFile>,
}

/// Where the heartbeat pings have got to.
struct Pings {
    /// None until the first turn finds where to start.
    progress: Option<PingProgress>,
    /// Runs that finish after this are pinged: the worker's start, when a heartbeat URL was last
    /// found unset, or when the worker last found the extension before one created anew.
    since: SystemTime,
}

impl Deliveries {
    /// A sender that pings the runs finishing from now on, not the past.
    pub fn new() -> Deliveries {
        Deliveries {
            http: None,
            pings: Pings::from_now(),
            unrecorded: None,
            alert_url: None,
        }
    }

    /// For an extension created anew (a DROP and CREATE EXTENSION) after `old_seen_at`, when the
    /// worker last found the one before, or none: the runs that finish from then on are pinged,
    /// also those that finished before the worker noticed, and not those a restore brought back;
    /// an attempt kept for an event of the old history is forgotten. The HTTP client is kept.
    pub fn start_new_history(&mut self, old_seen_at: SystemTime) {
        self.pings = Pings::from(old_seen_at);
        self.unrecorded = None;
    }

    /// One turn: a ping for each run finished since the last turn, then the due events to the
    /// webhook. Pings go first: they are few, and a backlog of events at a slow receiver must not
    /// hold back the sign that runs go on. A URL that cannot be used is a problem of its own
    /// deliveries only. Returns the problems met (each is retried on a later turn, but for a
    /// ping, which the next run's replaces).
    pub fn turn(&mut self) -> Result<(), String> {
        let until = Instant::now() + TURN_BUDGET;
        let targets = in_transaction(DeliveryTargets::load)?;
        let mut problems = Vec::new();
        let mut usable = |url: &Result<Option<String>, ConfigError>| match url {
            Ok(url) => url.clone(),
            Err(error) => {
                problems.push(error.to_string());
                None
            }
        };
        let heartbeat_url = usable(&targets.heartbeat_url);
        let alert_url = usable(&targets.alert_url);
        if heartbeat_url.is_none() {
            // Unset or unusable: the runs meanwhile are not pinged once it is set or mended, as
            // a ping that fails is not sent again (the next run's says the same).
            self.pings = Pings::from_now();
        }
        // Events go to a new URL only once what waits has been offered to it afresh.
        let alert_url = alert_url.filter(|url| match self.new_receiver(url) {
            Ok(()) => true,
            Err(problem) => {
                problems.push(problem);
                false
            }
        });
        if heartbeat_url.is_some() || alert_url.is_some() {
            match client_for(&mut self.http, &targets) {
                Ok(http) => {
                    if let Some(url) = &heartbeat_url {
                        problems.extend(self.pings.ping_finished_runs(http, url, until).err());
                    }
                    if let Some(url) = &alert_url {
                        let secret = targets.alert_secret.as_deref();
                        problems.extend(
                            send_events(http, url, secret, &mut self.unrecorded, until).err(),
                        );
                    }
                }
                Err(problem) => problems.push(problem),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// A webhook URL other than the last turn's: the events waiting are offered to it at once,
    /// afresh. An attempt at the old one still to be recorded is forgotten then, but for a
    /// delivery: recorded after, a refusal would count against the new receiver, and abandon an
    /// event it never saw. While they cannot be offered afresh (a lock on one, the database
    /// read-only), nothing goes to the new URL and that attempt is kept.
    fn new_receiver(&mut self, url: &str) -> Result<(), String> {
        if self.alert_url.as_deref().is_some_and(|last| last != url) {
            in_transaction(outbox::offer_now_to_a_new_receiver).map_err(|error| {
                format!("could not offer the events waiting to the new dex_collector.alert_url: {error}")
            })?;
            if !matches!(self.unrecorded, None | Some((_, Attempt::Delivered))) {
                self.unrecorded = None;
            }
        }
        self.alert_url = Some(url.to_string());
        Ok(())
    }
}

impl Drop for Deliveries {
    /// Without waiting for the runtime's helper threads: a DNS lookup blocked there would hold
    /// the worker's exit (a SIGTERM, a restart for new settings) for the resolver's timeout.
    fn drop(&mut self) {
        if let Some((http, _)) = self.http.take() {
            http.shut_down();
        }
    }
}

/// The client `kept`, or a new one in its place when the settings it was built for changed.
fn client_for<'k>(
    kept: &'k mut Option<(Http, ClientFor)>,
    targets: &DeliveryTargets,
) -> Result<&'k Http, String> {
    let wanted = ClientFor {
        connect_timeout: targets.connect_timeout,
        ca_file: targets.ca_file.as_deref().map(CaFile::read),
    };
    if kept
        .as_ref()
        .is_none_or(|(_, built_for)| *built_for != wanted)
    {
        if let Some((old, _)) = kept.take() {
            old.shut_down();
        }
        let http = run::build_http(wanted.connect_timeout, 2, wanted.ca_file.as_ref()).map_err(
            |error| match error {
                CollectError::Runtime { message } => {
                    format!("could not start the HTTP client for alerts and heartbeats: {message}")
                }
                other => other.to_string(),
            },
        )?;
        *kept = Some((http, wanted));
    }
    match kept {
        Some((http, _)) => Ok(http),
        None => Err("the HTTP client for alerts was not kept".into()),
    }
}

impl Pings {
    fn from_now() -> Pings {
        Pings::from(SystemTime::now())
    }

    fn from(since: SystemTime) -> Pings {
        Pings {
            progress: None,
            since,
        }
    }

    /// Pings for the runs finished and not pinged yet; the runs that finished before
    /// [`Pings::since`] are the past, so that a (re)started worker pings its own first run (a
    /// queued one too) but not what came before. A ping that fails is not repeated: the next run's
    /// ping says the same.
    fn ping_finished_runs(&mut self, http: &Http, url: &str, until: Instant) -> Result<(), String> {
        let progress = match &mut self.progress {
            Some(progress) => progress,
            None => {
                let since = self.since;
                let (after, past) = in_transaction(|| outbox::ping_start(since))?;
                self.progress.insert(PingProgress::after(after, past))
            }
        };
        let (after, pinged_beyond) = (progress.done_through(), progress.pinged_beyond());
        let found = in_transaction(|| outbox::runs_to_ping(after, &pinged_beyond))?;
        let mut pinged = 0;
        let mut failed = None;
        for &(run_id, succeeded) in &found.finished {
            if Instant::now() >= until {
                break;
            }
            let body = serde_json::json!({"run_id": run_id, "succeeded": succeeded}).to_string();
            match post(http, &heartbeat_url(url, succeeded), &[], body) {
                // Not sent: the next turn pings it.
                Err(DeliveryError::Interrupted) => break,
                Err(error) => {
                    failed = Some(format!("the heartbeat for run {run_id} failed: {error}"));
                }
                Ok(()) => {}
            }
            pinged += 1;
        }
        progress.turn_done(&found, pinged);
        failed.map_or(Ok(()), Err)
    }
}

/// The due events, oldest first, until one is not taken (the order is kept: none overtakes it)
/// but for one the receiver refuses for good, which is abandoned so that the next can go. An
/// attempt left `unrecorded` is recorded first; while it cannot be, nothing is sent. Each event
/// abandoned is logged at once, outside the worker's rate-limited problems (which would tell only
/// the first of a series of refusals, their ids aside): refusals pace them to a few a minute.
fn send_events(
    http: &Http,
    url: &str,
    secret: Option<&str>,
    unrecorded: &mut Option<(i64, Attempt)>,
    until: Instant,
) -> Result<(), String> {
    if let Some((id, attempt)) = unrecorded.take() {
        // Abandoned when it was taken, and only now recorded so: said like any other.
        if let Attempt::Abandoned(text) = record(id, attempt, unrecorded)? {
            warn_abandoned(id, &text);
        }
    }
    while Instant::now() < until {
        match send_oldest(http, url, secret, unrecorded)? {
            Sent::Nothing => break,
            Sent::Delivered => {}
            Sent::Abandoned { id, refusal } => warn_abandoned(id, &refusal),
        }
    }
    Ok(())
}

fn warn_abandoned(id: i64, refusal: &str) {
    pgrx::warning!(
        "dex_collector worker: dex_collector.alert_url refused event {id} ({refusal}); abandoned, not offered again"
    );
}

/// What one turn of [`send_events`] did.
enum Sent {
    /// No event was due, or the worker was interrupted while it sent one.
    Nothing,
    Delivered,
    /// The receiver refused this event for good.
    Abandoned {
        id: i64,
        refusal: String,
    },
}

/// The oldest due event, once.
fn send_oldest(
    http: &Http,
    url: &str,
    secret: Option<&str>,
    unrecorded: &mut Option<(i64, Attempt)>,
) -> Result<Sent, String> {
    let Some(pending) = in_transaction(outbox::oldest_undelivered)? else {
        return Ok(Sent::Nothing);
    };
    if !pending.due {
        return Ok(Sent::Nothing);
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
    let attempt = match post(http, url, &headers, body) {
        Ok(()) => Attempt::Delivered,
        Err(DeliveryError::Interrupted) => return Ok(Sent::Nothing),
        Err(error) if !error.is_refusal() => Attempt::Failed(error.to_string()),
        Err(error) if pending.refusals + 1 >= REFUSALS_BEFORE_ABANDONING => {
            Attempt::Abandoned(error.to_string())
        }
        Err(error) => Attempt::Refused(error.to_string()),
    };
    match record(pending.id, attempt, unrecorded)? {
        Attempt::Delivered => Ok(Sent::Delivered),
        Attempt::Abandoned(refusal) => Ok(Sent::Abandoned {
            id: pending.id,
            refusal,
        }),
        Attempt::Refused(text) | Attempt::Failed(text) => Err(format!(
            "event {} could not be delivered to dex_collector.alert_url: {text}",
            pending.id
        )),
    }
}

/// Records event `id`'s attempt and hands it back; when it cannot, keeps it in `unrecorded`.
fn record(
    id: i64,
    attempt: Attempt,
    unrecorded: &mut Option<(i64, Attempt)>,
) -> Result<Attempt, String> {
    match in_transaction(|| outbox::record_attempt(id, &attempt)) {
        Ok(()) => Ok(attempt),
        Err(error) => {
            *unrecorded = Some((id, attempt));
            Err(format!(
                "could not record an attempt to deliver event {id}, which waits for it: {error}"
            ))
        }
    }
}

fn post(
    http: &Http,
    url: &str,
    headers: &[(&str, String)],
    body: String,
) -> Result<(), DeliveryError> {
    http.post_json(url, headers, body, REQUEST_TIMEOUT, &pg::interrupt_pending)
}

/// `work` in a transaction of the worker's upkeep (it waits for a lock no more than a moment);
/// any error becomes its text.
fn in_transaction<T, E: std::fmt::Display>(
    work: impl FnOnce() -> Result<T, E> + std::panic::UnwindSafe,
) -> Result<T, String> {
    pg::in_upkeep_transaction(work)?.map_err(|error| error.to_string())
}
