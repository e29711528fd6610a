//! How results are recorded and old history deleted, as the SQL statements that do it: the
//! extension runs them through SPI, and the history benchmark runs the very same text through a
//! client, with simulated times in place of the clock (the `at` parameters, NULL in production).

/// How much of each company's results `dex_collector.run_results` keeps
/// (`dex_collector.history_detail`). Every result is counted in `runs` and in the daily rollups
/// either way, and changes the company's state in `companies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryDetail {
    /// A row for what is news: every failure, every skip but a company without credentials
    /// skipped again, the first success after anything else, a success with more pages pending
    /// or another HTTP status than the last. A success like the one before is counted only.
    Changes,
    /// A row for every result.
    All,
}

impl HistoryDetail {
    pub const fn as_str(self) -> &'static str {
        match self {
            HistoryDetail::Changes => "changes",
            HistoryDetail::All => "all",
        }
    }
}

/// The buckets of the rollups' duration histogram: bucket `b` counts the durations `ms` with
/// `floor(3 * log2(ms + 1)) = b` (the last one also everything longer), so each bucket is
/// 2^(1/3), about 26 %, wider than the one before, and a percentile read from the middle of its
/// bucket is within 12 % of the true one. 60 buckets reach 14 minutes.
pub const DURATION_BUCKETS: usize = 60;

/// Records results, in one statement: a `run_results` row each (by `$6`, the
/// [`HistoryDetail`]), the run's counts, each company's state in `companies` and its day in
/// `daily_rollups`, and an event (sent with NOTIFY at commit) for each change of state.
///
/// `$1` the run, `$2` its results as a JSON array of `CompanyResult::history_row`s, `$3` and `$4`
/// when failures become an episode (that many in a row, or that many milliseconds, NULL for
/// never, after the first), `$5` the skip of a company without credentials, `$6` the detail,
/// `$7` when (NULL: now, by the clock). A company's new state follows from its old one and the
/// result: failures count up (skips leave them be) until a success; an episode opens when they
/// reach `$3`, or `$4` has passed since the first of them, and only a success closes it. A
/// company is `skipped` for want of credentials only: one the run did not reach (its deadline, a
/// cancel, a refused key), or whose failure was the run's (`run_failure`: the key refused, or its
/// requests dropped by such a stop), keeps its state.
pub const RECORD_RESULTS: &str = "
WITH incoming AS (
    SELECT r.*, coalesce($7::timestamptz, clock_timestamp()) AS recorded_at,
           CASE WHEN r.status <> 'skipped' AND r.duration_ms IS NOT NULL
                THEN least(59, floor(3 * ln(greatest(r.duration_ms, 0) + 1) / ln(2) + 1e-9))::int
           END AS bucket,
           p.state AS was_state, p.state_since AS was_state_since, p.last_status AS was_status,
           p.last_http_status AS was_http_status, coalesce(p.alerted, false) AS was_alerted,
           p.consecutive_failures AS was_failures, p.failing_since AS was_failing_since,
           p.last_success_at AS was_last_success_at, p.last_error AS was_last_error,
           p.last_called_run_id AS was_called_run_id, p.last_success_run_id AS was_success_run_id,
           -- A company that failed for the run's sake (the key refused, its requests dropped by a
           -- stop of the whole run): for its state, as one the run did not reach.
           CASE WHEN r.status = 'failed' AND r.run_failure THEN 'skipped' ELSE r.status END
               AS status_for_state
      FROM jsonb_to_recordset($2) AS r(company_id uuid, company_name text, status text,
           http_status integer, pages integer, attempts integer, records_collected bigint,
           machines_updated bigint, duration_ms bigint, more_pending boolean, run_failure boolean,
           error text)
      LEFT JOIN dex_collector.companies p ON p.company_id = r.company_id
), stored AS (
    INSERT INTO dex_collector.run_results
           (run_id, company_id, company_name, status, http_status, pages, attempts,
            records_collected, machines_updated, duration_ms, more_pending, error, recorded_at)
    SELECT $1, i.company_id, i.company_name, i.status, i.http_status, i.pages, i.attempts,
           i.records_collected, i.machines_updated, i.duration_ms, i.more_pending, i.error,
           i.recorded_at
      FROM incoming i
     WHERE $6 = 'all' OR i.status = 'failed'
           OR (i.status = 'succeeded'
               AND (i.was_status IS DISTINCT FROM 'succeeded' OR i.more_pending
                    OR i.http_status IS DISTINCT FROM i.was_http_status))
           -- A company without credentials when it becomes so; other skips (the deadline) all.
           OR (i.status = 'skipped' AND NOT (i.error = $5 AND i.was_state IS NOT DISTINCT FROM 'skipped'))
), counted_run AS (
    -- Kept as results come, so that a run a crash cuts short has its counts without the detail.
    UPDATE dex_collector.runs r
       SET companies_processed = r.companies_processed + b.processed,
           companies_succeeded = r.companies_succeeded + b.succeeded,
           companies_failed = r.companies_failed + b.failed,
           companies_skipped = r.companies_skipped + b.skipped,
           -- An endpoint's counts go up to bigint's maximum (docs/contract.md): a sum stops
           -- there rather than fail the statement that records the run.
           records_collected = least(r.records_collected + b.records, 9223372036854775807),
           machines_updated = least(r.machines_updated + b.machines, 9223372036854775807),
           duration_ms = (extract(epoch FROM b.last_at - r.started_at) * 1000)::bigint
      FROM (SELECT count(*) FILTER (WHERE status <> 'skipped') AS processed,
                   count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                   count(*) FILTER (WHERE status = 'failed') AS failed,
                   count(*) FILTER (WHERE status = 'skipped') AS skipped,
                   coalesce(sum(records_collected), 0) AS records,
                   coalesce(sum(machines_updated), 0) AS machines,
                   max(recorded_at) AS last_at
              FROM incoming) b
     WHERE r.id = $1
), rolled_up AS (
    INSERT INTO dex_collector.daily_rollups AS d
           (day, company_id, company_name, attempts, succeeded, failed, skipped, requests,
            records_collected, machines_updated, duration_ms_max, duration_histogram)
    SELECT (i.recorded_at AT TIME ZONE 'UTC')::date, i.company_id, i.company_name,
           (i.status <> 'skipped')::int, (i.status = 'succeeded')::int,
           (i.status = 'failed')::int, (i.status = 'skipped')::int, coalesce(i.attempts, 0),
           coalesce(i.records_collected, 0), coalesce(i.machines_updated, 0),
           CASE WHEN i.bucket IS NOT NULL THEN i.duration_ms END,
           CASE WHEN i.bucket IS NULL THEN array_fill(0::smallint, ARRAY[60])
                ELSE array_fill(0::smallint, ARRAY[i.bucket]) || 1::smallint
                     || array_fill(0::smallint, ARRAY[59 - i.bucket]) END
      FROM incoming i
        ON CONFLICT (company_id, day) DO UPDATE
       SET company_name = excluded.company_name,
           attempts = d.attempts + excluded.attempts, succeeded = d.succeeded + excluded.succeeded,
           failed = d.failed + excluded.failed, skipped = d.skipped + excluded.skipped,
           requests = d.requests + excluded.requests,
           records_collected = least(d.records_collected::numeric + excluded.records_collected,
                                     9223372036854775807),
           machines_updated = least(d.machines_updated::numeric + excluded.machines_updated,
                                    9223372036854775807),
           duration_ms_max = greatest(d.duration_ms_max, excluded.duration_ms_max),
           -- The new row's histogram is all zeros but a 1 in its duration's bucket (if any); a
           -- bucket stops counting at smallint's 32,767.
           duration_histogram = CASE
               WHEN array_position(excluded.duration_histogram, 1::smallint) IS NULL THEN d.duration_histogram
               ELSE d.duration_histogram[:array_position(excluded.duration_histogram, 1::smallint) - 1]
                    || least(d.duration_histogram[array_position(excluded.duration_histogram, 1::smallint)] + 1,
                             32767)::smallint
                    || d.duration_histogram[array_position(excluded.duration_histogram, 1::smallint) + 1:] END
), counted AS (
    SELECT i.*,
           CASE i.status_for_state WHEN 'succeeded' THEN 0
                         WHEN 'failed' THEN coalesce(i.was_failures, 0) + 1
                         ELSE coalesce(i.was_failures, 0) END AS failures,
           CASE i.status_for_state WHEN 'succeeded' THEN NULL
                         WHEN 'failed' THEN coalesce(i.was_failing_since, i.recorded_at)
                         ELSE i.was_failing_since END AS failing_since,
           CASE WHEN i.status = 'succeeded' THEN i.recorded_at ELSE i.was_last_success_at END AS last_success_at,
           CASE WHEN i.status = 'failed' THEN i.error ELSE i.was_last_error END AS last_error,
           CASE WHEN i.status <> 'skipped' THEN $1 ELSE i.was_called_run_id END AS last_called_run_id,
           CASE WHEN i.status = 'succeeded' THEN $1 ELSE i.was_success_run_id END AS last_success_run_id
      FROM incoming i
), judged AS (
    SELECT c.*,
           (c.was_alerted AND c.status <> 'succeeded')
           OR (c.status_for_state = 'failed'
               AND (c.failures >= $3
                    OR coalesce(c.recorded_at - c.failing_since
                                    >= make_interval(secs => $4::bigint / 1000.0), false)))
               AS alerted
      FROM counted c
), stated AS (
    SELECT j.*,
           CASE WHEN j.status = 'skipped' AND j.error = $5 THEN 'skipped'
                -- Skipped for the run's sake (deadline, cancel, a refused key), or failed for it
                -- (`run_failure`): unchanged.
                WHEN j.status_for_state = 'skipped' AND j.was_state IS NOT NULL THEN j.was_state
                WHEN j.alerted THEN 'failing'
                WHEN j.last_success_at IS NOT NULL THEN 'ok'
                ELSE 'never_collected' END AS state
      FROM judged j
), upserted AS (
    INSERT INTO dex_collector.companies AS c
           (company_id, company_name, state, state_since, last_attempt_at, last_status, last_run_id,
            last_http_status, last_error, last_success_at, consecutive_failures, failing_since,
            alerted, last_called_run_id, last_success_run_id)
    SELECT company_id, company_name, state,
           CASE WHEN state IS DISTINCT FROM was_state THEN recorded_at ELSE was_state_since END,
           recorded_at, status, $1, http_status, last_error, last_success_at, failures,
           failing_since, alerted, last_called_run_id, last_success_run_id
      FROM stated
        ON CONFLICT (company_id) DO UPDATE
       SET company_name = excluded.company_name, state = excluded.state,
           state_since = excluded.state_since, last_attempt_at = excluded.last_attempt_at,
           last_status = excluded.last_status, last_run_id = excluded.last_run_id,
           last_http_status = excluded.last_http_status, last_error = excluded.last_error,
           last_success_at = excluded.last_success_at,
           consecutive_failures = excluded.consecutive_failures,
           failing_since = excluded.failing_since, alerted = excluded.alerted,
           last_called_run_id = excluded.last_called_run_id,
           last_success_run_id = excluded.last_success_run_id
), changes AS (
    -- Skipped for want of credentials, or collectable again; an episode announced, or ended.
    SELECT s.*, k.kind, k.n
      FROM stated s,
           LATERAL (VALUES
               (1, CASE WHEN s.state = 'skipped' AND s.was_state IS DISTINCT FROM 'skipped' THEN 'skipped'
                        WHEN s.was_state = 'skipped' AND s.state <> 'skipped' THEN 'collectable' END),
               (2, CASE WHEN s.alerted AND NOT s.was_alerted THEN 'failing'
                        WHEN s.was_alerted AND NOT s.alerted THEN 'recovered' END)) AS k(n, kind)
     WHERE k.kind IS NOT NULL
), events AS (
    INSERT INTO dex_collector.events (kind, company_id, company_name, run_id, details, created_at)
    SELECT kind, company_id, left(company_name, 200), $1,
           jsonb_build_object(
               'state', state, 'consecutive_failures', failures, 'failing_since', failing_since,
               'last_success_at', last_success_at, 'http_status', http_status,
               -- Bounded, so that the event fits in a NOTIFY payload.
               'error', CASE WHEN status = 'succeeded' THEN NULL ELSE left(coalesce(error, last_error), 1000) END),
           recorded_at
      FROM changes
     ORDER BY company_id, n
    RETURNING *
)
-- Sent when the transaction commits (or not at all).
SELECT pg_notify('dex_collector', dex_collector.event_payload(e)) FROM events e ORDER BY e.id";

/// The default retentions, in days: runs with their results (`dex_collector.history_retention`),
/// events (`event_retention`) and daily rollups (`rollup_retention`). The `history_size` view
/// (sql/helpers.sql) repeats them, for sessions that have not loaded the library.
pub const DEFAULT_HISTORY_RETENTION_DAYS: u32 = 14;
pub const DEFAULT_EVENT_RETENTION_DAYS: u32 = 90;
pub const DEFAULT_ROLLUP_RETENTION_DAYS: u32 = 400;

/// Runs per batch of [`DELETE_OLD_HISTORY`] (`$2`), each with its results (up to one row per
/// company).
pub const RETENTION_RUNS_BATCH: i64 = 20;
/// Events, and daily rollups, per batch of [`DELETE_OLD_HISTORY`] (`$6`).
pub const RETENTION_ROWS_BATCH: i64 = 5_000;

/// Deletes, in one small transaction, up to `$2` runs (each with its results) that started more
/// than `$1` seconds before `$5` (NULL: now, by the clock), and up to `$6` events created more
/// than `$3` seconds before it and `$6` rollups of days more than `$4` seconds before it; a NULL
/// retention keeps that kind. Returns how many rows went, in all: called again until none. Each
/// kind in the order of its time's index, bounded by a value computed once (a subquery, not a join
/// with `horizon`), so that a call with nothing to delete reads nothing more of it.
pub const DELETE_OLD_HISTORY: &str = "
WITH horizon AS (
    SELECT coalesce($5::timestamptz, clock_timestamp()) AS now
), old_runs AS (
    DELETE FROM dex_collector.runs
     WHERE id IN (SELECT id FROM dex_collector.runs
                   WHERE started_at < (SELECT now FROM horizon) - make_interval(secs => $1::float8)
                     AND status NOT IN ('queued', 'running')
                   ORDER BY started_at LIMIT $2)
    RETURNING 1
), old_events AS (
    DELETE FROM dex_collector.events
     WHERE id IN (SELECT id FROM dex_collector.events
                   WHERE created_at < (SELECT now FROM horizon) - make_interval(secs => $3::float8)
                   ORDER BY created_at LIMIT $6)
    RETURNING 1
), old_rollups AS (
    DELETE FROM dex_collector.daily_rollups
     WHERE (company_id, day) IN
           (SELECT company_id, day FROM dex_collector.daily_rollups
             WHERE day < (((SELECT now FROM horizon) - make_interval(secs => $4::float8))
                          AT TIME ZONE 'UTC')::date
             ORDER BY day LIMIT $6)
    RETURNING 1
)
SELECT (SELECT count(*) FROM old_runs) + (SELECT count(*) FROM old_events)
       + (SELECT count(*) FROM old_rollups)";
