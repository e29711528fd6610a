-- Monitoring views, pg_cron helpers, and the event trigger that takes the pg_cron job at DROP.

-- Per company: the latest attempt, the latest success, the latest error, how many attempts have
-- failed since the last success, and how long ago that success was (NULL: never). Index probes
-- per company (run_results_company_idx, _succeeded_idx, _failed_idx), never the whole history.
CREATE VIEW dex_collector.company_status AS
WITH RECURSIVE latest AS (
    -- A loose index scan over run_results_company_idx: each step jumps to the next company and
    -- lands on its latest row, so one index probe per company, however long the history.
    (SELECT r.company_id, r.run_id, r.company_name, r.status, r.recorded_at
       FROM dex_collector.run_results r
      ORDER BY r.company_id, r.run_id DESC
      LIMIT 1)
    UNION ALL
    SELECT n.company_id, n.run_id, n.company_name, n.status, n.recorded_at
      FROM latest l,
           LATERAL (SELECT r.company_id, r.run_id, r.company_name, r.status, r.recorded_at
                      FROM dex_collector.run_results r
                     WHERE r.company_id > l.company_id
                     ORDER BY r.company_id, r.run_id DESC
                     LIMIT 1) n
)
SELECT l.company_id,
       l.company_name,
       l.recorded_at AS last_attempt_at,
       l.status AS last_status,
       s.recorded_at AS last_success_at,
       (SELECT f.error FROM dex_collector.run_results f
         WHERE f.company_id = l.company_id AND f.status = 'failed'
         ORDER BY f.run_id DESC LIMIT 1) AS last_error,
       c.consecutive_failures,
       date_trunc('second', now() - s.recorded_at) AS since_last_success
  FROM latest l
  -- The latest success: the latest row itself, or one probe of run_results_succeeded_idx.
  LEFT JOIN LATERAL (SELECT l.run_id, l.recorded_at
                      WHERE l.status = 'succeeded'
                     UNION ALL
                     (SELECT r.run_id, r.recorded_at FROM dex_collector.run_results r
                       WHERE l.status <> 'succeeded'
                         AND r.company_id = l.company_id AND r.status = 'succeeded'
                       ORDER BY r.run_id DESC LIMIT 1)) s ON true
  -- Failed attempts since then (skipped ones neither count nor break the streak): none when the
  -- latest attempt succeeded, else an index-only count over run_results_failed_idx.
  CROSS JOIN LATERAL (SELECT count(*) AS consecutive_failures FROM dex_collector.run_results f
                       WHERE l.status <> 'succeeded'
                         AND f.company_id = l.company_id AND f.status = 'failed'
                         AND f.run_id > coalesce(s.run_id, 0)) c;
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

-- pg_cron helpers: create or replace, and remove, the job that runs dex_collect_all(). The job's
-- command names the function with its schema, so it works whatever the job's search_path.
CREATE FUNCTION dex_collector.schedule(schedule text DEFAULT '*/5 * * * *') RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed'
            USING ERRCODE = 'undefined_object',
                  HINT = 'Add pg_cron to shared_preload_libraries, restart, then CREATE EXTENSION pg_cron.';
    END IF;
    RETURN cron.schedule('dex-collection-every-5-minutes', schedule,
        format('SELECT %I.dex_collect_all()',
               (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                 WHERE e.extname = 'dex_collector')));
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

-- At DROP EXTENSION dex_collector: the jobs schedule() made in this database go too, instead of
-- failing every five minutes; other jobs that call dex_collector are named, not touched. pg_cron
-- shows a role its own jobs only, so a superuser's drop removes every such job.
CREATE FUNCTION dex_collector.unschedule_all() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    job record;
    removed integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RETURN 0;
    END IF;
    FOR job IN SELECT jobid, jobname, command FROM cron.job
                WHERE database = current_database()
                  AND (jobname = 'dex-collection-every-5-minutes' OR command ~ 'dex_collect_(all|company)')
                ORDER BY jobid LOOP
        IF job.jobname = 'dex-collection-every-5-minutes' THEN
            PERFORM cron.unschedule(job.jobid);
            removed := removed + 1;
        ELSE
            RAISE NOTICE 'dex_collector: pg_cron job % (%) still calls dex_collector', job.jobid, job.jobname
                USING HINT = format('Remove it with SELECT cron.unschedule(%s);', job.jobid);
        END IF;
    END LOOP;
    IF removed > 0 THEN
        RAISE NOTICE 'dex_collector: removed the pg_cron job dex-collection-every-5-minutes';
    END IF;
    RETURN removed;
END
$$;
COMMENT ON FUNCTION dex_collector.unschedule_all() IS
    'dex_collector: remove the pg_cron jobs dex_collector.schedule() made in this database (run at DROP EXTENSION)';

CREATE FUNCTION dex_collector.before_drop() RETURNS event_trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'dex_collector_before_drop';
CREATE EVENT TRIGGER dex_collector_before_drop ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION') EXECUTE FUNCTION dex_collector.before_drop();

REVOKE EXECUTE ON FUNCTION dex_collector.schedule(text), dex_collector.unschedule(),
    dex_collector.unschedule_all(), dex_collector.before_drop() FROM PUBLIC;
