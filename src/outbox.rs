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
/// refusals (the backoff after a refusal waits 10 s, then 20 s, however long the receiver was
/// unreachable before), so that a receiver mended within that time (a URL mistyped, a key rotated
/// on one side first) loses nothing, and one that refuses an event for good holds back the events
/// after it that long only.
pub const REFUSALS_BEFORE_ABANDONING: i32 = 3;

/// How one attempt to deliver an event ended.
pub enum Attempt {
    Delivered,
    /// Tried again after a backoff (10 s, doubling with the event's attempts up to an hour, with a
    /// fifth of jitter either way so that many databases do not retry together).
    Failed(String),
    /// Refused by the receiver: tried again after a backoff that doubles with the refusals in a
    /// row (10 s, 20 s), but for the last of [`REFUSALS_BEFORE_ABANDONING`], which is
    /// [`Attempt::Abandoned`].
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
                        + least(interval '1 hour', interval '10 seconds'
                                * 2 ^ least(CASE WHEN $3 THEN refusals ELSE delivery_attempts END, 9))
                          * (0.8 + random() * 0.4) END
              WHERE id = $1",
            None,
            &[id.into(), failure.into(), refused.into(), abandoned.into()],
        )?;
        Ok(())
    })
}

/// The events not delivered yet are offered at once, afresh (their attempts and refusals in a row
/// forgotten): for a receiver at a new URL, which the old one's backoff (up to an hour after a long
/// outage) and refusals say nothing about.
pub fn offer_now_to_a_new_receiver() -> Result<(), pgrx::spi::Error> {
    Spi::connect_mut(|client| {
        client.update(
            "UPDATE dex_collector.events
                SET next_delivery_at = NULL, refusals = 0, delivery_attempts = 0
              WHERE delivered_at IS NULL AND abandoned_at IS NULL AND delivery_attempts > 0",
            None,
            &[],
        )?;
        Ok(())
    })
}

/// Where pinging starts for a worker that begins at `moment`: the runs that finished (succeeded or
/// failed) before it are the past, not pinged; those that finished since are pinged, as the runs
/// not finished yet will be, whatever their ids. Returns the run to start after (the last of the
/// past, or the one before the first run to ping or to wait for, if that is lower), and the runs
/// of the past after it.
pub fn ping_start(moment: SystemTime) -> Result<(i64, Vec<i64>), pgrx::spi::Error> {
    let seconds = moment
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    Spi::connect(|client| {
        let rows = client.select(
            &format!(
                "WITH start AS (
                     SELECT least(max(r.id) FILTER (WHERE r.finished_at < to_timestamp($1)),
                                  min(r.id) FILTER (WHERE r.finished_at >= to_timestamp($1)) - 1,
                                  min(r.id) FILTER (WHERE r.status IN ('queued', 'running')) - 1)
                            AS after
                       FROM dex_collector.runs r
                      WHERE {PINGED} AND (r.status IN ('succeeded', 'failed') OR {UNFINISHED})
                 )
                 SELECT coalesce(s.after, 0), r.id FROM start s
                   LEFT JOIN dex_collector.runs r
                     ON r.id > s.after AND {PINGED} AND r.status IN ('succeeded', 'failed')
                    AND r.finished_at < to_timestamp($1)
                  ORDER BY r.id"
            ),
            None,
            &[seconds.into()],
        )?;
        let mut start = (0, Vec::new());
        for row in rows {
            start.0 = row.get::<i64>(1)?.unwrap_or_default();
            start.1.extend(row.get::<i64>(2)?);
        }
        Ok(start)
    })
}

/// The runs the heartbeat vouches for: those of every company, as the schedule makes them. A
/// `dex_collect_company()` call (an app's refresh of one company, say) is not the schedule: pinged,
/// it would keep the heartbeat going with the schedule stopped.
const PINGED: &str = "r.company_id IS NULL";

/// A run not finished yet: queued (it runs once the worker gets to it, however long that takes),
/// or running and begun within a day (an older one is taken to be lost, a crash's, and holds
/// nothing back).
const UNFINISHED: &str = "(r.status = 'queued'
      OR (r.status = 'running' AND r.started_at > clock_timestamp() - interval '1 day'))";

/// Runs to ping after run `after`, but for those `pinged` already (see [`Found`]), and the first
/// run after it not finished yet ([`UNFINISHED`]).
pub fn runs_to_ping(after: i64, pinged: &[i64]) -> Result<Found, pgrx::spi::Error> {
    Spi::connect(|client| {
        let rows = client.select(
            &format!(
                "WITH unfinished AS (
                     SELECT min(r.id) AS first FROM dex_collector.runs r
                      WHERE r.id > $1 AND {PINGED} AND {UNFINISHED}
                 )
                 SELECT f.id, f.status = 'succeeded', u.first
                   FROM unfinished u
                   LEFT JOIN (SELECT r.id, r.status FROM dex_collector.runs r
                               WHERE r.id > $1 AND {PINGED} AND r.status IN ('succeeded', 'failed')
                                 AND r.id <> ALL ($2)
                               ORDER BY r.id LIMIT $3) f ON true
                  ORDER BY f.id"
            ),
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
