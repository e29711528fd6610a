-- Monitoring views, pg_cron helpers, and a word at CREATE EXTENSION when the worker is off.

-- Per company: the latest attempt, the latest success, the latest error, how many attempts have
-- failed since the last success, and how long ago that success was (NULL: never).
CREATE VIEW dex_collector.company_status AS
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
CREATE VIEW dex_collector.run_summary AS
SELECT id AS run_id, started_at, finished_at, status, trigger,
       companies_total, companies_processed, companies_succeeded, companies_failed, companies_skipped,
       records_collected, machines_updated, duration_ms,
       round(100.0 * companies_succeeded / nullif(companies_processed, 0), 1) AS success_pct,
       error, companies_not_reached
  FROM dex_collector.runs
 ORDER BY id DESC;
COMMENT ON VIEW dex_collector.run_summary IS 'dex_collector: runs, newest first, with counts and durations';

REVOKE ALL ON dex_collector.company_status, dex_collector.run_summary FROM PUBLIC;

-- pg_cron helpers: create or replace, and remove, the job that runs SELECT dex_collect_all().
CREATE FUNCTION dex_collector.schedule(schedule text DEFAULT '*/5 * * * *') RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed'
            USING ERRCODE = 'undefined_object',
                  HINT = 'Add pg_cron to shared_preload_libraries, restart, then CREATE EXTENSION pg_cron.';
    END IF;
    RETURN cron.schedule('dex-collection-every-5-minutes', schedule, 'SELECT dex_collect_all()');
END
$$;
COMMENT ON FUNCTION dex_collector.schedule(text) IS
    'dex_collector: create or replace the pg_cron job dex-collection-every-5-minutes';

CREATE FUNCTION dex_collector.unschedule() RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed' USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM cron.job WHERE jobname = 'dex-collection-every-5-minutes') THEN
        RETURN false;
    END IF;
    RETURN cron.unschedule('dex-collection-every-5-minutes');
END
$$;
COMMENT ON FUNCTION dex_collector.unschedule() IS
    'dex_collector: remove the pg_cron job dex-collection-every-5-minutes; false if there was none';

REVOKE EXECUTE ON FUNCTION dex_collector.schedule(text), dex_collector.unschedule() FROM PUBLIC;

DO $$
BEGIN
    IF position('dex_collector' IN current_setting('shared_preload_libraries')) = 0 THEN
        RAISE NOTICE 'dex_collector: the background worker is off (dex_collect_all() works without it)'
            USING HINT = 'For dex_collect_all_async() and dex_collector.interval, set shared_preload_libraries = '
                         '''dex_collector'' and dex_collector.database, then restart PostgreSQL.';
    END IF;
END
$$;
