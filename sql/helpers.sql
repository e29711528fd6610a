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

-- pg_cron helpers: create or replace, and remove, the job that runs dex_collect_all(), named
-- dex_collect_all (before 0.3.0: dex-collection-every-5-minutes, whatever its schedule; that name
-- is still found and replaced). The job's command names the function with its schema, so it works
-- whatever the job's search_path.
CREATE FUNCTION dex_collector.schedule(schedule text DEFAULT '*/5 * * * *') RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed'
            USING ERRCODE = 'undefined_object',
                  HINT = 'Add pg_cron to shared_preload_libraries, restart, then CREATE EXTENSION pg_cron.';
    END IF;
    IF EXISTS (SELECT 1 FROM cron.job WHERE jobname = 'dex-collection-every-5-minutes'
                                        AND username = current_user) THEN
        PERFORM cron.unschedule('dex-collection-every-5-minutes');
    END IF;
    RETURN cron.schedule('dex_collect_all', schedule,
        format('SELECT %I.dex_collect_all()',
               (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                 WHERE e.extname = 'dex_collector')));
END
$$;
COMMENT ON FUNCTION dex_collector.schedule(text) IS
    'dex_collector: create or replace the pg_cron job dex_collect_all';

CREATE FUNCTION dex_collector.unschedule() RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    job record;
    removed boolean := false;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed' USING ERRCODE = 'undefined_object';
    END IF;
    FOR job IN SELECT jobname FROM cron.job
                WHERE jobname IN ('dex_collect_all', 'dex-collection-every-5-minutes')
                  AND username = current_user LOOP
        removed := cron.unschedule(job.jobname) OR removed;
    END LOOP;
    RETURN removed;
END
$$;
COMMENT ON FUNCTION dex_collector.unschedule() IS
    'dex_collector: remove the pg_cron job dex_collect_all; false if there was none';

-- When the extension goes (DROP EXTENSION, or DROP SCHEMA ... CASCADE of its schema, or DROP
-- OWNED BY its owner): the jobs schedule() made in this database go too, instead of failing every
-- five minutes; other jobs that call dex_collector are named, not touched. pg_cron shows a role
-- its own jobs only, so a superuser's drop removes every such job.
CREATE FUNCTION dex_collector.unschedule_all() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    job record;
    removed integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RETURN 0;
    END IF;
    -- A role without the use of pg_cron's schema drops the extension all the same; the job stays.
    BEGIN
        FOR job IN SELECT jobid, jobname, command FROM cron.job
                    WHERE database = current_database()
                      AND (jobname IN ('dex_collect_all', 'dex-collection-every-5-minutes')
                           OR command ~ 'dex_collect_(all|company)')
                    ORDER BY jobid LOOP
            IF job.jobname IN ('dex_collect_all', 'dex-collection-every-5-minutes') THEN
                PERFORM cron.unschedule(job.jobid);
                removed := removed + 1;
            ELSE
                RAISE NOTICE 'dex_collector: pg_cron job % (%) still calls dex_collector', job.jobid, job.jobname
                    USING HINT = format('Remove it with SELECT cron.unschedule(%s);', job.jobid);
            END IF;
        END LOOP;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'dex_collector: could not remove its pg_cron jobs: %', SQLERRM
            USING HINT = 'Remove the job dex_collect_all with cron.unschedule() as its owner.';
        RETURN 0;
    END;
    IF removed > 0 THEN
        RAISE NOTICE 'dex_collector: removed the pg_cron job dex_collect_all';
    END IF;
    RETURN removed;
END
$$;
COMMENT ON FUNCTION dex_collector.unschedule_all() IS
    'dex_collector: remove the pg_cron jobs dex_collector.schedule() made in this database (run when the extension is dropped)';

CREATE FUNCTION dex_collector.before_drop() RETURNS event_trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'dex_collector_before_drop';
CREATE EVENT TRIGGER dex_collector_before_drop ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA', 'DROP OWNED') EXECUTE FUNCTION dex_collector.before_drop();

REVOKE EXECUTE ON FUNCTION dex_collector.schedule(text), dex_collector.unschedule(),
    dex_collector.unschedule_all(), dex_collector.before_drop() FROM PUBLIC;

-- Who may use what, whatever the database's default privileges. The extension's owner may have
-- default privileges that grant every new function or table to other roles (on Supabase,
-- supabase_admin's give anon, authenticated and service_role EXECUTE on functions in public, so
-- any API caller could start a collection): those grants are revoked here. The pure DEX functions
-- are PUBLIC's, except where Supabase's API roles exist: PostgREST serves every function in an
-- exposed schema to them, and dex_parse() of a 4 MB argument costs a backend a hundred MB or more,
-- so there PUBLIC loses EXECUTE on them as well and the privileged role gets it to pass on. And
-- when supautils names a privileged role (`postgres` on Supabase), that role gets, with grant
-- option, what it needs to collect, schedule, monitor and dump: USAGE on schema dex_collector,
-- EXECUTE on the collection, pg_cron and DEX functions, SELECT on the history, its views and the
-- run id sequence. Nothing else: no write on the history, no setting, no key. Run at CREATE
-- EXTENSION, by every upgrade script (supautils has no hook after ALTER EXTENSION UPDATE), and by
-- supabase/extension-custom-scripts/dex_collector/after-create.sql.
CREATE FUNCTION dex_collector.settle_privileges() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    privileged text := nullif(current_setting('supautils.privileged_role', true), '');
    privileged_oid oid;
    ext_oid oid;
    ext_schema name;
    grantee text;
    pure_dex constant text[] := ARRAY['dex_parse', 'dex_validate', 'dex_segments', 'dex_products', 'dex_sales'];
    -- Supabase's roles for API callers: where one exists, the DEX functions are not PUBLIC's.
    api_roles_exist constant boolean :=
        EXISTS (SELECT 1 FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role'));
    public_dex text[];
    obj record;
BEGIN
    SELECT r.oid INTO privileged_oid FROM pg_roles r WHERE r.rolname = privileged;
    SELECT e.oid, n.nspname INTO ext_oid, ext_schema
      FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'dex_collector';
    -- Grants the objects' owners' default privileges made: grantor the object's owner, grantee and
    -- privilege named in one of that owner's default ACLs for that kind of object. Each is said.
    FOR obj IN
        WITH members AS (
            SELECT d.classid, d.objid FROM pg_depend d
             WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext_oid AND d.deptype = 'e'
        ), acls AS (
            SELECT 'FUNCTION' AS kind, p.oid::regprocedure::text AS name, p.proacl AS acl,
                   p.proowner AS owner, 'f' AS deftype, p.pronamespace AS nsp
              FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
             WHERE p.proname <> ALL (pure_dex) OR api_roles_exist
            UNION ALL
            SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, c.oid::regclass::text,
                   c.relacl, c.relowner, CASE c.relkind WHEN 'S' THEN 'S' ELSE 'r' END, c.relnamespace
              FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
            UNION ALL
            SELECT 'SCHEMA', quote_ident(n.nspname), n.nspacl, n.nspowner, 'n', 0::oid
              FROM members m JOIN pg_namespace n ON m.classid = 'pg_namespace'::regclass AND n.oid = m.objid
        ), defaults AS (
            SELECT da.defaclrole AS owner, da.defaclobjtype AS deftype, da.defaclnamespace AS nsp,
                   (aclexplode(da.defaclacl)).grantee, (aclexplode(da.defaclacl)).privilege_type
              FROM pg_default_acl da
        )
        SELECT DISTINCT a.kind, a.name, x.grantee, x.privilege_type
          FROM acls a, aclexplode(a.acl) x
         WHERE x.grantor = a.owner AND x.grantee <> a.owner
           AND x.grantee IS DISTINCT FROM privileged_oid
           AND EXISTS (SELECT 1 FROM defaults df
                        WHERE df.owner = a.owner AND df.deftype = a.deftype
                          AND df.grantee = x.grantee AND df.privilege_type = x.privilege_type
                          AND (df.nsp = 0 OR df.nsp = a.nsp))
    LOOP
        grantee := CASE WHEN obj.grantee = 0 THEN 'PUBLIC' ELSE obj.grantee::regrole::text END;
        RAISE NOTICE 'dex_collector: revoking % on % from %, which default privileges granted',
            obj.privilege_type, obj.name, grantee;
        EXECUTE format('REVOKE %s ON %s %s FROM %s CASCADE', obj.privilege_type, obj.kind, obj.name, grantee);
    END LOOP;

    IF api_roles_exist THEN
        SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) INTO public_dex
          FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
         WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext_oid AND d.deptype = 'e'
           AND d.classid = 'pg_proc'::regclass AND p.proname = ANY (pure_dex)
           AND EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                        WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE');
        IF public_dex IS NOT NULL THEN
            RAISE NOTICE 'dex_collector: revoking EXECUTE on % from PUBLIC: Supabase''s API roles exist',
                array_to_string(public_dex, ', ')
                USING HINT = 'GRANT EXECUTE on a DEX function to a role that should call it.';
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', array_to_string(public_dex, ', '));
        END IF;
    END IF;

    IF privileged_oid IS NULL THEN
        RETURN;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA dex_collector TO %I WITH GRANT OPTION', privileged);
    FOR obj IN
        SELECT 'EXECUTE ON FUNCTION ' || p.oid::regprocedure::text AS target
          FROM unnest(ARRAY[format('%I.dex_collect_all()', ext_schema),
                            format('%I.dex_collect_company(uuid)', ext_schema),
                            format('%I.dex_collect_all_async()', ext_schema),
                            'dex_collector.schedule(text)', 'dex_collector.unschedule()']) AS f(signature)
          JOIN pg_proc p ON p.oid = to_regprocedure(f.signature)
        UNION ALL
        SELECT 'EXECUTE ON FUNCTION ' || p.oid::regprocedure::text
          FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
         WHERE api_roles_exist
           AND d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext_oid AND d.deptype = 'e'
           AND d.classid = 'pg_proc'::regclass AND p.proname = ANY (pure_dex)
        UNION ALL
        SELECT 'SELECT ON ' || CASE c.relkind WHEN 'S' THEN 'SEQUENCE ' ELSE 'TABLE ' END || c.oid::regclass::text
          FROM unnest(ARRAY['dex_collector.runs', 'dex_collector.run_results', 'dex_collector.run_summary',
                            'dex_collector.company_status', 'dex_collector.runs_id_seq']) AS r(relation)
          JOIN pg_class c ON c.oid = to_regclass(r.relation)
    LOOP
        EXECUTE format('GRANT %s TO %I WITH GRANT OPTION', obj.target, privileged);
    END LOOP;
END
$$;
COMMENT ON FUNCTION dex_collector.settle_privileges() IS
    'dex_collector: revoke what default privileges granted on its objects (and PUBLIC''s use of the DEX functions where Supabase''s API roles exist); grant supautils.privileged_role what it needs';
REVOKE EXECUTE ON FUNCTION dex_collector.settle_privileges() FROM PUBLIC;
SELECT dex_collector.settle_privileges();
