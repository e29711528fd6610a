//! Runs that stop arriving, as events: the background worker notes when `dex_collector.health`
//! turns stale (`stale`) and when runs start again (`fresh`). A SQL call that raises (a broken
//! `targets_query`, say, under pg_cron) rolls back with its run's row, so no run and no
//! `run_failed` event says it failed; only the runs' absence does.

use std::time::Instant;

use pgrx::prelude::*;
use serde_json::Value;

use crate::pg;

/// The interval runs are meant to start at, as the worker last found it, and since when.
pub struct ScheduleWatch {
    interval: Option<String>,
    since: Instant,
}

impl ScheduleWatch {
    /// Watching from now: the schedule gets two of its intervals before it is called stale.
    pub fn new() -> ScheduleWatch {
        ScheduleWatch {
            interval: None,
            since: Instant::now(),
        }
    }

    /// Records a `stale` or `fresh` event when health's `stale` differs from the last one recorded,
    /// in a transaction of its own, and sends it with NOTIFY as the other events are; returns it as
    /// NOTIFY sends it.
    ///
    /// `stale` is noted once the interval runs are meant to start at has been the same for two of
    /// it since the worker first found it: after the worker starts (a server restart) or the
    /// schedule changes, the schedule gets its chance first. `fresh` needs a run that started
    /// since `stale`: a schedule changed or paused is no news of runs. Nothing is noted while no
    /// interval is known (no regular, active pg_cron job `dex_collect_all`, no
    /// `dex_collector.interval`).
    pub fn note_change(&mut self) -> Result<Option<Value>, String> {
        let known = self.interval.clone();
        let watched = self.since.elapsed().as_secs_f64();
        let (interval, event) = pg::in_transaction(move || note(known.as_deref(), watched))?
            .map_err(|error| error.to_string())?;
        if interval != self.interval {
            self.interval = interval;
            self.since = Instant::now();
        }
        Ok(event)
    }
}

/// The interval now, and the event noted, if any.
fn note(
    known_interval: Option<&str>,
    watched_seconds: f64,
) -> Result<(Option<String>, Option<Value>), pgrx::spi::Error> {
    Spi::connect_mut(|client| {
        let rows = client.update(
            "WITH health AS (
                 SELECT stale, expected_every, last_run_id, last_run_started_at
                   FROM dex_collector.health
             ), said AS (
                 SELECT kind, run_id FROM dex_collector.events
                  WHERE kind IN ('stale', 'fresh') ORDER BY id DESC LIMIT 1
             ), noted AS (
                 INSERT INTO dex_collector.events AS e (kind, run_id, details)
                 SELECT CASE WHEN h.stale THEN 'stale' ELSE 'fresh' END, h.last_run_id,
                        jsonb_build_object('last_run_started_at', h.last_run_started_at,
                                           'expected_every', h.expected_every::text,
                                           'expected_every_seconds',
                                           extract(epoch FROM h.expected_every)::float8)
                   FROM health h LEFT JOIN said s ON true
                  WHERE h.expected_every IS NOT NULL
                    AND CASE WHEN h.stale
                             THEN s.kind IS DISTINCT FROM 'stale'
                                  AND h.expected_every::text = $1
                                  AND make_interval(secs => $2) >= 2 * h.expected_every
                             ELSE s.kind = 'stale' AND h.last_run_id IS DISTINCT FROM s.run_id END
                 RETURNING dex_collector.event_payload(e) AS payload
             ), notified AS (
                 SELECT payload, pg_notify('dex_collector', payload) FROM noted
             )
             SELECT h.expected_every::text, n.payload FROM health h LEFT JOIN notified n ON true",
            None,
            &[known_interval.into(), watched_seconds.into()],
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok((None, None));
        };
        let interval = row.get::<String>(1)?;
        let event = row
            .get::<String>(2)?
            .and_then(|payload| serde_json::from_str(&payload).ok());
        Ok((interval, event))
    })
}
