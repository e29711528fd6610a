-- dex_collector's own objects: the run history.

-- Text is read and written as UTF-8: in a database of another encoding, a company name that is
-- not plain ASCII fails every run (and a DEX text its parse), and what is written is garbled.
-- SQL_ASCII, which takes any bytes, is left to hold UTF-8.
DO $$
BEGIN
    IF pg_catalog.getdatabaseencoding() NOT IN ('UTF8', 'SQL_ASCII') THEN
        RAISE EXCEPTION 'dex_collector needs a UTF8 database; this one is %',
                        pg_catalog.getdatabaseencoding()
              USING ERRCODE = 'feature_not_supported',
                    HINT = 'Make one with CREATE DATABASE ... ENCODING ''UTF8'' TEMPLATE template0, '
                           'and move the data into it with pg_dump and pg_restore.';
    END IF;
END
$$;

-- The collection functions live in the extension's schema (public by default), so that
-- `SELECT dex_collect_all()` works with the default search_path; everything else lives here.
CREATE SCHEMA dex_collector;
COMMENT ON SCHEMA dex_collector IS 'dex_collector: run history and helpers';

-- One row per run, whoever started it.
CREATE TABLE dex_collector.runs (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at           timestamptz,
    status                text NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'skipped', 'interrupted')),
    trigger               text NOT NULL,            -- manual, pg_cron, worker, async
    started_by            name NOT NULL DEFAULT session_user,
    companies_total       integer NOT NULL DEFAULT 0, -- targets selected
    companies_processed   integer NOT NULL DEFAULT 0, -- endpoint called
    companies_succeeded   integer NOT NULL DEFAULT 0,
    companies_failed      integer NOT NULL DEFAULT 0,
    companies_skipped     integer NOT NULL DEFAULT 0,
    records_collected     bigint NOT NULL DEFAULT 0,
    machines_updated      bigint NOT NULL DEFAULT 0,
    duration_ms           bigint,
    error                 text,
    companies_not_reached integer NOT NULL DEFAULT 0, -- not called: the run deadline came first
    run_key               uuid NOT NULL DEFAULT gen_random_uuid(), -- in every Idempotency-Key it sends
    concurrency_adaptive  boolean NOT NULL DEFAULT false, -- dex_collector.adaptive_concurrency was on
    concurrency_limit     integer,  -- companies at once: the setting, or where an adaptive run settled
    overloaded_answers    integer NOT NULL DEFAULT 0, -- 429 and 503 answers
    retries               integer NOT NULL DEFAULT 0, -- requests sent again
    retries_refused       integer NOT NULL DEFAULT 0, -- retries the run's retry budget did not allow
    answer_spread         real,     -- how widely an adaptive run's answer times spread
    company_id            uuid      -- dex_collect_company()'s company; NULL: a run of every company
);
CREATE INDEX runs_started_at_idx ON dex_collector.runs (started_at DESC);
-- The worker's look for a queued run every few seconds, and for the runs not finished (marked
-- interrupted at its start, waited for by the heartbeat): not a scan of every run.
CREATE INDEX runs_unfinished_idx ON dex_collector.runs (id) WHERE status IN ('queued', 'running');
COMMENT ON TABLE dex_collector.runs IS 'dex_collector: one row per collection run';

-- One row per company per run.
CREATE TABLE dex_collector.run_results (
    run_id                bigint NOT NULL REFERENCES dex_collector.runs (id) ON DELETE CASCADE,
    company_id            uuid NOT NULL,
    company_name          text,
    status                text NOT NULL CHECK (status IN ('succeeded', 'failed', 'skipped')),
    http_status           integer,
    pages                 integer NOT NULL DEFAULT 0,
    attempts              integer NOT NULL DEFAULT 0,
    records_collected     bigint NOT NULL DEFAULT 0,
    machines_updated      bigint NOT NULL DEFAULT 0,
    duration_ms           bigint,
    more_pending          boolean NOT NULL DEFAULT false,
    error                 text,                       -- the error, or why the company was skipped
    recorded_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, company_id)
);
CREATE INDEX run_results_company_idx ON dex_collector.run_results (company_id, run_id DESC);
COMMENT ON TABLE dex_collector.run_results IS 'dex_collector: one row per company per run';

-- One row per company the collector has targeted: its health as of its latest result, kept in
-- the transaction that records the result (history.rs), so that company_status, health and the
-- fair order read it without going through the history. A change of state is an event (below).
CREATE TABLE dex_collector.companies (
    company_id            uuid PRIMARY KEY,
    company_name          text,
    -- ok: collected, and not failing; failing: an episode of failures is open (see alerted);
    -- skipped: its latest result was a skip (no credentials); never_collected: no success yet.
    state                 text NOT NULL
        CHECK (state IN ('ok', 'failing', 'skipped', 'never_collected')),
    state_since           timestamptz NOT NULL,
    last_attempt_at       timestamptz NOT NULL,
    last_status           text NOT NULL CHECK (last_status IN ('succeeded', 'failed', 'skipped')),
    last_run_id           bigint,  -- no foreign keys to runs: this outlives the history's retention
    last_http_status      integer,
    last_error            text,    -- the latest failure's error
    last_success_at       timestamptz,
    consecutive_failures  integer NOT NULL DEFAULT 0, -- since the last success; skips do not count
    failing_since         timestamptz,               -- the first of those failures
    -- The episode of failures has been announced (a 'failing' event); only a success ends it.
    alerted               boolean NOT NULL DEFAULT false,
    -- The fair order: the latest run that called the endpoint for it, and the latest that collected.
    last_called_run_id    bigint,
    last_success_run_id   bigint
);
COMMENT ON TABLE dex_collector.companies IS 'dex_collector: one row per company, its health as of its latest result';

-- Append-only: a company starting to fail (after alert_after_failures failures or alert_after
-- without a success), recovering, becoming skipped or collectable again; a run failing as a whole
-- or cut short by the deadline; runs no longer starting on schedule, and starting again (noted by
-- the background worker). Each is also sent with NOTIFY on channel dex_collector.
CREATE TABLE dex_collector.events (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind                  text NOT NULL CHECK (kind IN ('failing', 'recovered', 'skipped', 'collectable',
                                                        'run_failed', 'run_cut_short', 'stale', 'fresh')),
    company_id            uuid,
    company_name          text,
    run_id                bigint,
    details               jsonb NOT NULL DEFAULT '{}',
    -- The webhook (dex_collector.alert_url) as an outbox: the background worker posts events in
    -- order, each until the receiver takes it (2xx), with a backoff between attempts.
    delivered_at          timestamptz,
    delivery_attempts     integer NOT NULL DEFAULT 0,
    delivery_error        text,        -- the latest failed attempt's (kept once delivered)
    next_delivery_at      timestamptz, -- not before this (the backoff)
    -- The receiver's refusals of it in a row (a 4xx other than 408 and 429); at the third it is
    -- abandoned: not offered again, and no longer holding back the events after it.
    refusals              integer NOT NULL DEFAULT 0,
    abandoned_at          timestamptz
);
CREATE INDEX events_undelivered_idx ON dex_collector.events (id)
    WHERE delivered_at IS NULL AND abandoned_at IS NULL;
-- What health counts as undelivered alerts: offered to the webhook, not taken yet.
CREATE INDEX events_offered_idx ON dex_collector.events (id)
    WHERE delivered_at IS NULL AND abandoned_at IS NULL AND delivery_attempts > 0;
-- What health counts as refused alerts: those abandoned after the last one the webhook took.
CREATE INDEX events_abandoned_idx ON dex_collector.events (id)
    WHERE abandoned_at IS NOT NULL AND delivered_at IS NULL;
CREATE INDEX events_delivered_idx ON dex_collector.events (id) WHERE delivered_at IS NOT NULL;
-- The worker's look at whether it last said runs stopped or started again, every cycle.
CREATE INDEX events_staleness_idx ON dex_collector.events (id) WHERE kind IN ('stale', 'fresh');
-- Retention, and the last day's events in metrics: the old ones, or the new, not every event.
CREATE INDEX events_created_at_idx ON dex_collector.events (created_at);
COMMENT ON TABLE dex_collector.events IS 'dex_collector: changes of a company''s health, runs that failed or were cut short, and runs stopping or starting again';

-- One row per company per day (UTC), kept with each result in the statement that records it
-- (history_sql.rs): every result counts here whatever dex_collector.history_detail keeps in
-- run_results, and these rows outlive the detail (dex_collector.rollup_retention).
CREATE TABLE dex_collector.daily_rollups (
    day                   date NOT NULL,
    company_id            uuid NOT NULL,
    company_name          text,
    attempts              integer NOT NULL DEFAULT 0, -- results that called the endpoint
    succeeded             integer NOT NULL DEFAULT 0,
    failed                integer NOT NULL DEFAULT 0,
    skipped               integer NOT NULL DEFAULT 0,
    requests              integer NOT NULL DEFAULT 0, -- HTTP requests: pages and retries
    records_collected     bigint NOT NULL DEFAULT 0,
    machines_updated      bigint NOT NULL DEFAULT 0,
    duration_ms_max       bigint,
    -- The attempts' durations in 60 buckets: bucket b (element b + 1) counts those whose
    -- floor(3 * log2(ms + 1)) is b, the last also all longer ones; each 2^(1/3) wider than the one
    -- before, so a percentile read from its bucket's middle is within 12 %. smallint, to keep the
    -- row small: a bucket stops counting at 32,767 a day (one attempt every 2.6 s, all alike).
    duration_histogram    smallint[] NOT NULL,
    PRIMARY KEY (company_id, day)
) WITH (fillfactor = 80);  -- today's rows are updated at every run: room for those updates in place
CREATE INDEX daily_rollups_day_idx ON dex_collector.daily_rollups (day);
COMMENT ON TABLE dex_collector.daily_rollups IS 'dex_collector: one row per company per day, every result counted';

-- The history is the users' data: pg_dump keeps it, and run ids resume where they were. Runs in
-- progress (or queued) at dump time are left out: the dumped server finishes them.
SELECT pg_catalog.pg_extension_config_dump('dex_collector.runs',
    $$WHERE status NOT IN ('queued', 'running')$$);
SELECT pg_catalog.pg_extension_config_dump('dex_collector.run_results',
    $$WHERE run_id IN (SELECT id FROM dex_collector.runs WHERE status NOT IN ('queued', 'running'))$$);
SELECT pg_catalog.pg_extension_config_dump('dex_collector.runs_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('dex_collector.companies', '');
SELECT pg_catalog.pg_extension_config_dump('dex_collector.events', '');
SELECT pg_catalog.pg_extension_config_dump('dex_collector.events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('dex_collector.daily_rollups', '');

-- The history is the extension's: no other role reads or writes it unless granted.
REVOKE ALL ON ALL TABLES IN SCHEMA dex_collector FROM PUBLIC;
