-- dex_collector's own objects: the run history.
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
    run_key               uuid NOT NULL DEFAULT gen_random_uuid() -- in every Idempotency-Key it sends
);
CREATE INDEX runs_started_at_idx ON dex_collector.runs (started_at DESC);
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
-- A run's targets go in the order of their last call and last success (run.rs): one index probe
-- per company each, however long a company has been failing or skipped.
CREATE INDEX run_results_called_idx ON dex_collector.run_results (company_id, run_id DESC)
    WHERE status <> 'skipped';
CREATE INDEX run_results_succeeded_idx ON dex_collector.run_results (company_id, run_id DESC)
    WHERE status = 'succeeded';
-- company_status's latest error and failures since the last success: one probe of the failed
-- rows (a few percent of the history) per company.
CREATE INDEX run_results_failed_idx ON dex_collector.run_results (company_id, run_id DESC)
    WHERE status = 'failed';
COMMENT ON TABLE dex_collector.run_results IS 'dex_collector: one row per company per run';

-- The history is the users' data: pg_dump keeps it, and run ids resume where they were. Runs in
-- progress (or queued) at dump time are left out: the dumped server finishes them.
SELECT pg_catalog.pg_extension_config_dump('dex_collector.runs',
    $$WHERE status NOT IN ('queued', 'running')$$);
SELECT pg_catalog.pg_extension_config_dump('dex_collector.run_results',
    $$WHERE run_id IN (SELECT id FROM dex_collector.runs WHERE status NOT IN ('queued', 'running'))$$);
SELECT pg_catalog.pg_extension_config_dump('dex_collector.runs_id_seq', '');

-- The history is the extension's: no other role reads or writes it unless granted.
REVOKE ALL ON ALL TABLES IN SCHEMA dex_collector FROM PUBLIC;
