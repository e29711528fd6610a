-- The history's tables and views, column by column, and the extension's functions.
\set VERBOSITY default
\d dex_collector.runs
\d dex_collector.run_results
\d dex_collector.companies
\d dex_collector.events
\d dex_collector.daily_rollups
\d dex_collector.run_summary
\d dex_collector.company_status
\d dex_collector.health
\d dex_collector.metrics
\d dex_collector.company_days
\d dex_collector.daily_totals
\d dex_collector.history_size
-- Every relation of the extension, so that a new one shows up here.
SELECT c.relname, c.relkind
  FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.classid = 'pg_class'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'dex_collector')
 ORDER BY 1;
-- Every function: its signature, result, volatility and security.
SELECT p.oid::regprocedure AS function, pg_get_function_result(p.oid) AS result,
       p.provolatile AS volatility, p.prosecdef AS security_definer
  FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.classid = 'pg_proc'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'dex_collector')
 ORDER BY p.oid::regprocedure::text;
