-- dex_collector 0.1.0 to 0.2.0: runs report the companies the deadline left out, targets go in
-- fair order (two partial indexes serve it), company_status says how long since a success, and
-- dex_products() and dex_sales() are new.
-- The result must be the schema a fresh 0.2.0 install makes: the upgrade test compares them.
\echo Use "ALTER EXTENSION dex_collector UPDATE TO '0.2.0'" to load this file. \quit

ALTER TABLE dex_collector.runs
    ADD COLUMN companies_not_reached integer NOT NULL DEFAULT 0;

CREATE INDEX run_results_called_idx ON dex_collector.run_results (company_id, run_id DESC)
    WHERE status <> 'skipped';
CREATE INDEX run_results_succeeded_idx ON dex_collector.run_results (company_id, run_id DESC)
    WHERE status = 'succeeded';

-- OR REPLACE keeps the views' grants; the new columns come last, as in a fresh install.
CREATE OR REPLACE VIEW dex_collector.company_status AS
SELECT s.company_id,
       s.company_name,
       s.last_attempt_at,
       s.last_status,
       s.last_success_at,
       s.last_error,
       (SELECT count(*) FROM dex_collector.run_results f
         WHERE f.company_id = s.company_id AND f.status = 'failed'
           AND f.run_id > coalesce(s.last_success_run_id, 0)) AS consecutive_failures,
       date_trunc('second', now() - s.last_success_at) AS since_last_success
  FROM (SELECT company_id,
               (array_agg(company_name ORDER BY run_id DESC))[1] AS company_name,
               max(recorded_at) AS last_attempt_at,
               (array_agg(status ORDER BY run_id DESC))[1] AS last_status,
               max(recorded_at) FILTER (WHERE status = 'succeeded') AS last_success_at,
               max(run_id) FILTER (WHERE status = 'succeeded') AS last_success_run_id,
               (array_agg(error ORDER BY run_id DESC) FILTER (WHERE status = 'failed'))[1] AS last_error
          FROM dex_collector.run_results
         GROUP BY company_id) AS s;
COMMENT ON VIEW dex_collector.company_status IS
    'dex_collector: per company, last attempt, last success, last error, consecutive failures, time since last success';

-- Recent runs with their counts and durations, newest first.
CREATE OR REPLACE VIEW dex_collector.run_summary AS
SELECT id AS run_id, started_at, finished_at, status, trigger,
       companies_total, companies_processed, companies_succeeded, companies_failed, companies_skipped,
       records_collected, machines_updated, duration_ms,
       round(100.0 * companies_succeeded / nullif(companies_processed, 0), 1) AS success_pct,
       error, companies_not_reached
  FROM dex_collector.runs
 ORDER BY id DESC;
COMMENT ON VIEW dex_collector.run_summary IS 'dex_collector: runs, newest first, with counts and durations';


-- 0.2.0 no longer reads dex_collector.service_key: a setting is readable by every role and logged
-- on reload. Say so now if a value is left in the catalog (never the value itself).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_db_role_setting s, unnest(s.setconfig) AS c
                WHERE c LIKE 'dex_collector.service\_key=%') THEN
        RAISE WARNING 'dex_collector.service_key is still set with ALTER DATABASE or ALTER ROLE, and 0.2.0 no longer reads it'
            USING HINT = 'Store the key in Supabase Vault (dex_collector_service_key) or in a file named by '
                         'dex_collector.service_key_file, then RESET dex_collector.service_key where it is set.';
    END IF;
END
$$;

-- The DEX functions new in 0.2.0, as pgrx generates them for a fresh install.
CREATE  FUNCTION "dex_products"(
	"raw" bytea /* & [u8] */
) RETURNS TABLE (
	"selection" TEXT,  /* Option < String > */
	"name" TEXT,  /* Option < String > */
	"price" NUMERIC,  /* Option < AnyNumeric > */
	"vends_since_init" bigint,  /* Option < i64 > */
	"value_since_init" NUMERIC,  /* Option < AnyNumeric > */
	"vends_since_reset" bigint,  /* Option < i64 > */
	"value_since_reset" NUMERIC,  /* Option < AnyNumeric > */
	"test_vends_since_init" bigint,  /* Option < i64 > */
	"free_vends_since_init" bigint  /* Option < i64 > */
)
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'dex_products_bytea_wrapper';

CREATE  FUNCTION "dex_products"(
	"raw" TEXT /* & str */
) RETURNS TABLE (
	"selection" TEXT,  /* Option < String > */
	"name" TEXT,  /* Option < String > */
	"price" NUMERIC,  /* Option < AnyNumeric > */
	"vends_since_init" bigint,  /* Option < i64 > */
	"value_since_init" NUMERIC,  /* Option < AnyNumeric > */
	"vends_since_reset" bigint,  /* Option < i64 > */
	"value_since_reset" NUMERIC,  /* Option < AnyNumeric > */
	"test_vends_since_init" bigint,  /* Option < i64 > */
	"free_vends_since_init" bigint  /* Option < i64 > */
)
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'dex_products_text_wrapper';

CREATE  FUNCTION "dex_sales"(
	"older" bytea, /* & [u8] */
	"newer" bytea, /* & [u8] */
	"ignore_mismatch" bool DEFAULT false /* bool */
) RETURNS TABLE (
	"selection" TEXT,  /* String */
	"name" TEXT,  /* Option < String > */
	"units" bigint,  /* Option < i64 > */
	"value" NUMERIC,  /* Option < AnyNumeric > */
	"status" TEXT  /* String */
)
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'dex_sales_bytea_wrapper';

CREATE  FUNCTION "dex_sales"(
	"older" TEXT, /* & str */
	"newer" TEXT, /* & str */
	"ignore_mismatch" bool DEFAULT false /* bool */
) RETURNS TABLE (
	"selection" TEXT,  /* String */
	"name" TEXT,  /* Option < String > */
	"units" bigint,  /* Option < i64 > */
	"value" NUMERIC,  /* Option < AnyNumeric > */
	"status" TEXT  /* String */
)
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'dex_sales_text_wrapper';
