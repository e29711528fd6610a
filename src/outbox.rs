//! What the background worker has to send, as the database keeps it: the events not yet taken by
//! the webhook (in order, each with its attempts and backoff), and the finished runs the
//! heartbeat pings.

use std::time::{SystemTime, UNIX_EPOCH};

use dex_collector_core::pings::{Found, RUNS_AT_ONCE};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

/// The oldest event the webhook has not taken.
pub struct PendingEvent {
    pub id: i64,
    /// The event as NOTIFY sends it (`dex_collector.event_payload`).
    pub event: Value,
    /// A stable key across attempts and unique across databases: the id and its creation time.
    pub idempotency_key: String,
    /// Its backoff has passed.
    pub due: bool,
    /// The receiver's refusals of it in a row so far.
    pub refusals: i32,
}

/// The oldest undelivered event, if any.
pub fn oldest_undelivered() -> Result<Option<PendingEvent>, pgrx::spi::Error> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT e.id, dex_collector.event_payload(e)::jsonb,
                    format('dex-collector-event-%s-%s', e.id,
                           (extract(epoch FROM e.created_at) * 1000000)::bigint),
                    coalesce(e.next_delivery_at <= clock_timestamp(), true), e.refusals
               FROM dex_collector.events e
              WHERE e.delivered_at IS NULL AND e.abandoned_at IS NULL
              ORDER BY e.id LIMIT 1",
            None,
            &[],
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(PendingEvent {
            id: row.get::<i64>(1)?.unwrap_or_default(),
            event: row.get::<JsonB>(2)?.map(|json| json.0).unwrap_or_default(),
            idempotency_key: row.get::<String>(3)?.unwrap_or_default(),
            due: row.get::<bool>(4)?.unwrap_or(true),
            refusals: row.get::<i32>(5)?.unwrap_or_default(),
        }))
    })
}

/// An event the receiver refuses this many times in a row is abandoned: about half a minute of
/// refusals for an event offered for the first time (the backoff waits 10 s, then 20 s), so that a
/// receiver mended within that time (a URL mistyped, a key rotated on one side first) loses
/// nothing, and one that refuses an event for good holds back the events after it that long only.
pub const REFUSALS_BEFORE_ABANDONING: i32 = 3;

/// How one attempt to deliver an event ended.
pub enum Attempt {
    Delivered,
    /// Tried again after a backoff (10 s, doubling up to an hour, with a fifth of jitter either
    /// way so that many databases do not retry together).
    Failed(String),
    /// Refused by the receiver: tried again after the backoff, but for the last of
    /// [`REFUSALS_BEFORE_ABANDONING`], which is [`Attempt::Abandoned`].
    Refused(String),
    /// Refused for good: abandoned, so that the events after it go out.
    Abandoned(String),
}

/// Records one attempt. An event marked sent or abandoned meanwhile (by hand, while the attempt
/// was under way) stays so.
pub fn record_attempt(id: i64, attempt: &Attempt) -> Result<(), pgrx::spi::Error> {
    let (failure, refused, abandoned) = match attempt {
        Attempt::Delivered => (None, false, false),
        Attempt::Failed(failure) => (Some(failure.as_str()), false, false),
        Attempt::Refused(failure) => (Some(failure.as_str()), true, false),
        Attempt::Abandoned(failure) => (Some(failure.as_str()), true, true),
    };
    Spi::connect_mut(|client| {
        client.update(
            "UPDATE dex_collector.events
                SET delivery_attempts = delivery_attempts + 1,
                    delivered_at = coalesce(delivered_at,
                        CASE WHEN $2::text IS NULL THEN clock_timestamp() END),
                    refusals = CASE WHEN $3 THEN refusals + 1 ELSE 0 END,
                    abandoned_at = coalesce(abandoned_at, CASE WHEN $4 THEN clock_timestamp() END),
                    delivery_error = coalesce(left($2, 1000), delivery_error),
                    next_delivery_at = CASE WHEN $2::text IS NOT NULL AND NOT $4 THEN clock_timestamp()
                        + least(interval '1 hour', interval '10 seconds' * 2 ^ least(delivery_attempts, 9))
                          * (0.8 + random() * 0.4) END
              WHERE id = $1",
            None,
            &[id.into(), failure.into(), refused.into(), abandoned.into()],
        )?;
        Ok(())
    })
}

/// The latest run that finished (succeeded or failed) before `moment`, if any.
pub fn latest_run_finished_before(moment: SystemTime) -> Result<Option<i64>, pgrx::spi::Error> {
    let seconds = moment
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    Spi::get_one_with_args(
        "SELECT max(id) FROM dex_collector.runs
          WHERE status IN ('succeeded', 'failed') AND finished_at < to_timestamp($1)",
        &[seconds.into()],
    )
}

/// Runs to ping after run `after`, but for those `pinged` already (see [`Found`]); the first run
/// not finished yet is looked for only among those begun within a day: an older one is taken to
/// be lost, and holds nothing back.
pub fn runs_to_ping(after: i64, pinged: &[i64]) -> Result<Found, pgrx::spi::Error> {
    Spi::connect(|client| {
        let rows = client.select(
            "WITH unfinished AS (
                 SELECT min(id) AS first FROM dex_collector.runs
                  WHERE id > $1 AND status IN ('queued', 'running')
                    AND started_at > clock_timestamp() - interval '1 day'
             )
             SELECT r.id, r.status = 'succeeded', u.first
               FROM unfinished u
               LEFT JOIN LATERAL (SELECT id, status FROM dex_collector.runs
                                   WHERE id > $1 AND status IN ('succeeded', 'failed')
                                     AND id <> ALL ($2)
                                   ORDER BY id LIMIT $3) r ON true
              ORDER BY r.id",
            None,
            &[
                after.into(),
                pinged.to_vec().into(),
                (RUNS_AT_ONCE as i64).into(),
            ],
        )?;
        let mut found = Found::default();
        for row in rows {
            found.first_unfinished = row.get::<i64>(3)?;
            if let Some(id) = row.get::<i64>(1)? {
                found
                    .finished
                    .push((id, row.get::<bool>(2)?.unwrap_or(false)));
            }
        }
        Ok(found)
    })
}
