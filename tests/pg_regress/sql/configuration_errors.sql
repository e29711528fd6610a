-- Every configuration error a user can meet before a request is sent: a setting refused when it
-- is set, and a collection refused before it calls anything. SQLSTATE after each (psql's
-- SQLSTATE, 00000 after a statement that succeeded; see dex_errors.sql for why not the verbose
-- form). No endpoint runs here: nothing in this file may reach one.
\set VERBOSITY default
\set SHOW_CONTEXT never
LOAD 'dex_collector';

-- Settings checked when set (00000: taken as it is, and checked when a run reads it).
SET dex_collector.site_url = 'not a url';
\echo :SQLSTATE
SET dex_collector.site_url = 'ftp://example.com';
\echo :SQLSTATE
SET dex_collector.site_url = 'https://example.com/api?x=1';
\echo :SQLSTATE
SET dex_collector.service_key = 'eyJhbGciOiJIUzI1NiJ9.a-secret-typed-here';
\echo :SQLSTATE
SET dex_collector.service_key_file = 'relative/path';
\echo :SQLSTATE
SET dex_collector.concurrency = 0;
\echo :SQLSTATE
SET dex_collector.concurrency = 1001;
\echo :SQLSTATE
SET dex_collector.max_concurrency = 0;
\echo :SQLSTATE
SET dex_collector.adaptive_concurrency = 'sometimes';
\echo :SQLSTATE
SET dex_collector.request_timeout = -1;
\echo :SQLSTATE
SET dex_collector.run_deadline = '1 ms';
\echo :SQLSTATE
SET dex_collector.max_retries = -1;
\echo :SQLSTATE
SET dex_collector.history_detail = 'some';
\echo :SQLSTATE
SET dex_collector.targets_query = '';
\echo :SQLSTATE
SET dex_collector.alert_url = 'not a url';
\echo :SQLSTATE
SET dex_collector.heartbeat_url = 'mailto:someone@example.com';
\echo :SQLSTATE
SET dex_collector.ca_file = 'relative.pem';
\echo :SQLSTATE
-- The prefix is the extension's: a misspelt name is refused, not kept as a placeholder.
SET dex_collector.concurency = 4;
\echo :SQLSTATE
-- What the refusals left: the defaults.
SHOW dex_collector.concurrency;
SHOW dex_collector.history_detail;
RESET ALL;

-- A collection refused before a request: no site URL.
SELECT dex_collect_all();
\echo :SQLSTATE
SELECT dex_collect_company('00000000-0000-0000-0000-000000000001');
\echo :SQLSTATE
-- A NULL id (a lookup that found no company) raises, before the configuration is read.
SELECT dex_collect_company(NULL);
\echo :SQLSTATE

-- A site URL, but no service key: no Vault here, no key file set.
SET dex_collector.site_url = 'http://127.0.0.1:9';
SELECT dex_collect_all();
\echo :SQLSTATE

-- A key file that is not there.
SET dex_collector.service_key_file = '/nonexistent/dex_collector/service_key';
SELECT dex_collect_all();
\echo :SQLSTATE

-- A key file that is not a file.
SET dex_collector.service_key_file = '/';
SELECT dex_collect_all();
\echo :SQLSTATE

-- A usable key file (the data directory's PG_VERSION: the server's user's, mode 0600; its path
-- is left out of the output), and a targets query that names what is not there, gives the wrong
-- columns, fails or writes.
SELECT set_config('dex_collector.service_key_file',
                  current_setting('data_directory') || '/PG_VERSION', false) IS NOT NULL AS key_file_set;
SET dex_collector.targets_query = 'SELECT id FROM public.no_such_table';
SELECT dex_collect_all();
\echo :SQLSTATE
SET dex_collector.targets_query = 'SELECT id, company_name FROM public.companies';
SELECT dex_collect_all();
\echo :SQLSTATE
SET dex_collector.targets_query = 'SELECT 1/0';
SELECT dex_collect_all();
\echo :SQLSTATE
SET dex_collector.targets_query = 'DELETE FROM public.companies RETURNING id';
SELECT dex_collect_all();
\echo :SQLSTATE
SELECT count(*) AS companies_still_there FROM public.companies;
RESET dex_collector.targets_query;
RESET dex_collector.service_key_file;

-- Queued for the worker, where no worker serves this database (the library is not preloaded).
SELECT dex_collect_all_async();
\echo :SQLSTATE

-- Nothing of the above left a run behind.
SELECT count(*) AS runs FROM dex_collector.runs;
RESET ALL;
