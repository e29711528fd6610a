-- The self-hosted Supabase scenario, run with psql as `postgres` (not a superuser there) on a
-- Supabase database that has the design's schema (tests/fixtures/sample_schema.sql) and
-- dex_collector installed: by the e2e suite on a cluster built from Supabase's parts
-- (tests/e2e/tests/supabase.rs), and by the GitHub workflow in supabase/postgres images built
-- from supabase/Dockerfile. Any unmet expectation stops it with an error (exit status 3):
--
--   psql -X -v ON_ERROR_STOP=1 -U postgres -d postgres \
--        -v site_url=http://127.0.0.1:PORT -v service_key=KEY -f tests/supabase/scenario.sql
\set ON_ERROR_STOP on

CREATE FUNCTION pg_temp.expect(met boolean, expectation text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF met IS NOT TRUE THEN
        RAISE EXCEPTION 'scenario: expected %', expectation;
    END IF;
END
$$;

-- Create: supautils lets postgres create the privileged extensions, as supabase_admin.
CREATE EXTENSION IF NOT EXISTS pg_cron;
CREATE EXTENSION IF NOT EXISTS supabase_vault;
CREATE EXTENSION dex_collector SCHEMA extensions;
SELECT pg_temp.expect(
    (SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'dex_collector') = 'supabase_admin',
    'dex_collector created through supautils, owned by supabase_admin');

-- The site URL and the service key as Vault secrets.
SELECT vault.create_secret(:'site_url', 'dex_collector_site_url');
SELECT vault.create_secret(:'service_key', 'dex_collector_service_key');

-- Collect: every company with an active machine and credentials (8 in the sample schema), read
-- through row level security by the SECURITY DEFINER function.
SELECT pg_temp.expect((extensions.dex_collect_all() ->> 'successfulCollections')::int = 8,
                      'eight companies collected');
SELECT pg_temp.expect(
    (SELECT status = 'succeeded' AND companies_succeeded = 8 AND companies_skipped = 2
       FROM dex_collector.runs ORDER BY id DESC LIMIT 1),
    'the run recorded as succeeded, 8 companies collected and 2 skipped');

-- Schedule: pg_cron runs the job as postgres; every minute here, to see it run.
SELECT dex_collector.schedule('* * * * *');
DO $$
BEGIN
    FOR attempt IN 1..90 LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM dex_collector.runs
                           WHERE trigger = 'pg_cron' AND status = 'succeeded');
        PERFORM pg_sleep(1);
    END LOOP;
END
$$;
SELECT pg_temp.expect(EXISTS (SELECT 1 FROM dex_collector.runs
                               WHERE trigger = 'pg_cron' AND status = 'succeeded'),
                      'a run started by pg_cron within 90 seconds');
SELECT pg_temp.expect(dex_collector.unschedule(), 'the pg_cron job removed');

-- History, as postgres reads it.
SELECT run_id, status, trigger, companies_processed, companies_failed, error
  FROM dex_collector.run_summary LIMIT 5;
SELECT pg_temp.expect((SELECT count(*) FROM dex_collector.company_status WHERE consecutive_failures > 0) = 0,
                      'no company failing');

-- The API roles get nothing of the extension: no function, no schema, no relation.
SELECT pg_temp.expect(NOT EXISTS (
    SELECT 1
      FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid,
           unnest(ARRAY['anon', 'authenticated', 'service_role']) AS r(role)
     WHERE d.refclassid = 'pg_extension'::regclass AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
       AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'dex_collector')
       AND has_function_privilege(r.role, p.oid, 'EXECUTE')),
    'no function of dex_collector executable by anon, authenticated or service_role');
SELECT pg_temp.expect(NOT EXISTS (
    SELECT 1
      FROM pg_class c, unnest(ARRAY['anon', 'authenticated', 'service_role']) AS r(role)
     WHERE c.relnamespace = 'dex_collector'::regnamespace
       AND (has_table_privilege(r.role, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
            OR has_schema_privilege(r.role, 'dex_collector', 'USAGE'))),
    'no use of schema dex_collector or its relations for anon, authenticated or service_role');

\echo 'scenario: passed'
