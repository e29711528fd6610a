-- Run once, when `cargo pgrx regress` creates the database: the extension, and the design's
-- three tables with their sample companies (tests/fixtures/sample_schema.sql). Every file after
-- it sets what it changes in its own session only.
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE EXTENSION dex_collector;
\set ECHO none
\i ../fixtures/sample_schema.sql
\set ECHO all
SELECT extversion FROM pg_extension WHERE extname = 'dex_collector';
SELECT count(*) AS companies FROM public.companies;
