-- dex_collector 0.2.0 to 0.3.0 (unreleased): where Supabase's API roles exist, they get nothing
-- of the extension, the pure DEX functions included (PostgREST would serve those to anonymous
-- callers); schedule()'s pg_cron job is named dex_collect_all (it was
-- dex-collection-every-5-minutes whatever its schedule), and it goes with the extension also when
-- DROP SCHEMA ... CASCADE or DROP OWNED BY takes the extension.
-- The result must be the schema a fresh 0.3.0 install makes: the upgrade test compares them.
\echo Use "ALTER EXTENSION dex_collector UPDATE TO '0.3.0'" to load this file. \quit

-- OR REPLACE keeps each function's grants.
CREATE OR REPLACE FUNCTION dex_collector.schedule(schedule text DEFAULT '*/5 * * * *') RETURNS bigint
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

CREATE OR REPLACE FUNCTION dex_collector.unschedule() RETURNS boolean
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
CREATE OR REPLACE FUNCTION dex_collector.unschedule_all() RETURNS integer
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

-- The trigger fires for the other statements that can drop the extension too; the new trigger
-- is a member of the extension like the old one.
DROP EVENT TRIGGER dex_collector_before_drop;
CREATE EVENT TRIGGER dex_collector_before_drop ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA', 'DROP OWNED') EXECUTE FUNCTION dex_collector.before_drop();

-- Existing jobs get the new name (pg_cron's own trigger on cron.job tells its scheduler).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        UPDATE cron.job SET jobname = 'dex_collect_all'
         WHERE jobname = 'dex-collection-every-5-minutes' AND database = current_database();
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'dex_collector: could not rename the pg_cron job dex-collection-every-5-minutes: %', SQLERRM
        USING HINT = 'Run SELECT dex_collector.schedule(...) again as its owner: it replaces the old job.';
END
$$;

CREATE OR REPLACE FUNCTION dex_collector.settle_privileges() RETURNS void
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
SELECT dex_collector.settle_privileges();
