-- What PUBLIC may do with the extension's objects, and what a plain role meets when it tries.
\set VERBOSITY default
\set SHOW_CONTEXT never
-- Functions PUBLIC may execute, and relations PUBLIC has any privilege on.
SELECT p.oid::regprocedure AS function
  FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.classid = 'pg_proc'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'dex_collector')
   AND has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY p.oid::regprocedure::text;
SELECT c.relname,
       has_table_privilege('public', c.oid, 'SELECT') AS public_select,
       has_table_privilege('public', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE') AS public_writes
  FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.classid = 'pg_class'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'dex_collector')
   AND c.relkind IN ('r', 'v')
 ORDER BY 1;
SELECT has_schema_privilege('public', 'dex_collector', 'USAGE') AS public_schema_usage;

-- A plain role, with no grant of its own (the library loaded first, so that its settings are
-- checked when set, not when a later call loads it).
LOAD 'dex_collector';
CREATE ROLE dex_regress_plain LOGIN;
SET ROLE dex_regress_plain;
SELECT dex_collect_all();
\echo :SQLSTATE
SELECT dex_collect_company('00000000-0000-0000-0000-000000000001');
\echo :SQLSTATE
SELECT dex_collect_all_async();
\echo :SQLSTATE
SELECT dex_collector.schedule('*/5 * * * *');
\echo :SQLSTATE
SELECT count(*) FROM dex_collector.runs;
\echo :SQLSTATE
SELECT count(*) FROM dex_collector.run_summary;
\echo :SQLSTATE
SELECT count(*) FROM dex_collector.health;
\echo :SQLSTATE
SET dex_collector.concurrency = 4;
\echo :SQLSTATE
-- The DEX functions are for everyone (where no Supabase API role exists).
SELECT dex_parse('DXS*1*VA*V0/6*1') IS NOT NULL AS dex_parse_works;
\echo :SQLSTATE
RESET ROLE;
DROP ROLE dex_regress_plain;
