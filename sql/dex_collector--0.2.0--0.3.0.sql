-- dex_collector 0.2.0 to 0.3.0 (unreleased): where Supabase's API roles exist, they get nothing
-- of the extension, the pure DEX functions included (PostgREST would serve those to anonymous
-- callers); schedule()'s pg_cron job is named dex_collect_all (it was
-- dex-collection-every-5-minutes whatever its schedule), and it goes with the extension also when
-- DROP SCHEMA ... CASCADE or DROP OWNED BY takes the extension; each company's health is state,
-- its changes events sent with NOTIFY, as are runs that stop arriving on schedule; run_results
-- keeps what changed, daily_rollups counts all;
-- runs say how many companies they collected at once, and what the endpoint's load did to it;
-- dex_collect_company(NULL) raises instead of returning NULL; dex_validate() and dex_segments() take
-- bytea too, as dex_parse() does.
-- The result must be the schema a fresh 0.3.0 install makes: the upgrade test compares them.
\echo Use "ALTER EXTENSION dex_collector UPDATE TO '0.3.0'" to load this file. \quit

-- Every object below names its schema: with only PostgreSQL's own in the path, no function or
-- operator another role made in the extension's schema can be bound into a view or default here
-- (a view keeps what it was bound to, and the worker reads them as a superuser). LOCAL: the
-- script's end restores the path (a plain SET would outlive it, in the caller's session).
SET LOCAL search_path = pg_catalog, pg_temp;

-- Called on NULL input, to raise (a NULL result read as a call that did something).
ALTER FUNCTION @extschema@.dex_collect_company(uuid) CALLED ON NULL INPUT;

-- As pgrx writes them into a fresh install's script.
CREATE FUNCTION @extschema@.dex_validate(raw bytea) RETURNS jsonb
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'dex_validate_bytea_wrapper';
CREATE FUNCTION @extschema@.dex_segments(raw bytea)
RETURNS TABLE (line integer, segment text, elements text[])
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'dex_segments_bytea_wrapper';
-- Each takes the grants its text form was given (a REVOKE FROM PUBLIC, a role's GRANT), as made
-- anew by the extension's owner; settle_privileges(), at the end, does the rest, as at a fresh
-- install.
DO $$
DECLARE
    forms record;
    granted record;
BEGIN
    FOR forms IN
        SELECT pg_catalog.to_regprocedure(f.name || '(bytea)') AS bytea_form, t.proacl
          FROM unnest(ARRAY['@extschema@.dex_validate', '@extschema@.dex_segments']) AS f(name)
          JOIN pg_catalog.pg_proc t ON t.oid = pg_catalog.to_regprocedure(f.name || '(text)')
         WHERE t.proacl IS NOT NULL
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', forms.bytea_form);
        FOR granted IN
            SELECT a.grantee, a.is_grantable FROM pg_catalog.aclexplode(forms.proacl) AS a
             WHERE a.privilege_type = 'EXECUTE'
        LOOP
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s%s', forms.bytea_form,
                CASE WHEN granted.grantee = 0 THEN 'PUBLIC'
                     ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(granted.grantee)) END,
                CASE WHEN granted.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
    END LOOP;
END
$$;

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
-- is a member of the extension like the old one, and disabled (or enabled for replicas only, or
-- always) if the old one was: a DBA's ALTER EVENT TRIGGER outlives the update.
DO $$
DECLARE
    was_enabled constant "char" :=
        (SELECT evtenabled FROM pg_catalog.pg_event_trigger WHERE evtname = 'dex_collector_before_drop');
BEGIN
    DROP EVENT TRIGGER dex_collector_before_drop;
    CREATE EVENT TRIGGER dex_collector_before_drop ON ddl_command_start
        WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA', 'DROP OWNED') EXECUTE FUNCTION dex_collector.before_drop();
    IF was_enabled <> 'O' THEN
        EXECUTE pg_catalog.format('ALTER EVENT TRIGGER dex_collector_before_drop %s',
                                  CASE was_enabled WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA'
                                                   ELSE 'ENABLE ALWAYS' END);
    END IF;
END
$$;

-- Existing jobs get the new name (pg_cron's own trigger on cron.job tells its scheduler), unless
-- their owner already has a job of that name (pg_cron's names are unique per user).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        UPDATE cron.job AS old SET jobname = 'dex_collect_all'
         WHERE old.jobname = 'dex-collection-every-5-minutes' AND old.database = current_database()
           AND NOT EXISTS (SELECT 1 FROM cron.job j
                            WHERE j.jobname = 'dex_collect_all' AND j.username = old.username);
        IF EXISTS (SELECT 1 FROM cron.job WHERE jobname = 'dex-collection-every-5-minutes'
                      AND database = current_database()) THEN
            RAISE WARNING 'dex_collector: the pg_cron job dex-collection-every-5-minutes keeps its name: its owner has a job named dex_collect_all already'
                USING HINT = 'If both collect, unschedule one: SELECT cron.unschedule(''dex-collection-every-5-minutes'');';
        END IF;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'dex_collector: could not rename the pg_cron job dex-collection-every-5-minutes: %', SQLERRM
        USING HINT = 'Run SELECT dex_collector.schedule(...) again as its owner: it replaces the old job.';
END
$$;

-- How many companies each run collected at once (adaptive runs start near where the latest ones
-- settled, their first windows from how widely the last one's answer times spread), and what the
-- endpoint's load did to it; and the company of a dex_collect_company() run, which health and the
-- heartbeat leave out (0.2.0's such runs cannot be told apart, and stay NULL).
ALTER TABLE dex_collector.runs
    ADD COLUMN concurrency_adaptive boolean NOT NULL DEFAULT false,
    ADD COLUMN concurrency_limit integer,
    ADD COLUMN overloaded_answers integer NOT NULL DEFAULT 0,
    ADD COLUMN retries integer NOT NULL DEFAULT 0,
    ADD COLUMN retries_refused integer NOT NULL DEFAULT 0,
    ADD COLUMN answer_spread real,
    ADD COLUMN company_id uuid;
CREATE OR REPLACE VIEW dex_collector.run_summary AS
SELECT id AS run_id, started_at, finished_at, status, trigger,
       companies_total, companies_processed, companies_succeeded, companies_failed, companies_skipped,
       records_collected, machines_updated, duration_ms,
       round(100.0 * companies_succeeded / nullif(companies_processed, 0), 1) AS success_pct,
       error, companies_not_reached, concurrency_adaptive, concurrency_limit, overloaded_answers,
       retries, retries_refused, answer_spread, company_id
  FROM dex_collector.runs
 ORDER BY id DESC;

-- Health as state: dex_collector.companies, one row per company kept with each result, and
-- dex_collector.events, its changes (and failed or cut-short runs, and runs that stop or start
-- again), each sent with NOTIFY;
-- company_status answers from companies, dex_collector.health says in one row whether collection
-- is healthy.
-- One row per company the collector has targeted: its health as of its latest result, kept in
-- the transaction that records the result (history.rs), so that company_status, health and the
-- fair order read it without going through the history. A change of state is an event (below).
CREATE TABLE dex_collector.companies (
    company_id            uuid PRIMARY KEY,
    company_name          text,
    -- ok: collected, and not failing; failing: an episode of failures is open (see alerted);
    -- skipped: its latest result was a skip (no credentials); never_collected: no success yet.
    state                 text NOT NULL
        CHECK (state IN ('ok', 'failing', 'skipped', 'never_collected')),
    state_since           timestamptz NOT NULL,
    last_attempt_at       timestamptz NOT NULL,
    last_status           text NOT NULL CHECK (last_status IN ('succeeded', 'failed', 'skipped')),
    last_run_id           bigint,  -- no foreign keys to runs: this outlives the history's retention
    last_http_status      integer,
    last_error            text,    -- the latest failure's error
    last_success_at       timestamptz,
    consecutive_failures  integer NOT NULL DEFAULT 0, -- since the last success; skips do not count
    failing_since         timestamptz,               -- the first of those failures
    -- The episode of failures has been announced (a 'failing' event); only a success ends it.
    alerted               boolean NOT NULL DEFAULT false,
    -- The fair order: the latest run that called the endpoint for it, and the latest that collected.
    last_called_run_id    bigint,
    last_success_run_id   bigint
);
COMMENT ON TABLE dex_collector.companies IS 'dex_collector: one row per company, its health as of its latest result';

-- Append-only: a company starting to fail (after alert_after_failures failures or alert_after
-- without a success), recovering, becoming skipped or collectable again; a run failing as a whole
-- or cut short by the deadline; runs no longer starting on schedule, and starting again (noted by
-- the background worker). Each is also sent with NOTIFY on channel dex_collector.
CREATE TABLE dex_collector.events (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind                  text NOT NULL CHECK (kind IN ('failing', 'recovered', 'skipped', 'collectable',
                                                        'run_failed', 'run_cut_short', 'stale', 'fresh')),
    company_id            uuid,
    company_name          text,
    run_id                bigint,
    details               jsonb NOT NULL DEFAULT '{}',
    -- The webhook (dex_collector.alert_url) as an outbox: the background worker posts events in
    -- order, each until the receiver takes it (2xx), with a backoff between attempts.
    delivered_at          timestamptz,
    delivery_attempts     integer NOT NULL DEFAULT 0,
    delivery_error        text,        -- the latest failed attempt's (kept once delivered)
    next_delivery_at      timestamptz, -- not before this (the backoff)
    -- The receiver's refusals of it in a row (a 4xx other than 408 and 429); at the third it is
    -- abandoned: not offered again, and no longer holding back the events after it.
    refusals              integer NOT NULL DEFAULT 0,
    abandoned_at          timestamptz
);
CREATE INDEX events_undelivered_idx ON dex_collector.events (id)
    WHERE delivered_at IS NULL AND abandoned_at IS NULL;
-- What health counts as undelivered alerts: offered to the webhook, not taken yet.
CREATE INDEX events_offered_idx ON dex_collector.events (id)
    WHERE delivered_at IS NULL AND abandoned_at IS NULL AND delivery_attempts > 0;
-- What health counts as refused alerts: those abandoned after the last one the webhook took.
CREATE INDEX events_abandoned_idx ON dex_collector.events (id)
    WHERE abandoned_at IS NOT NULL AND delivered_at IS NULL;
CREATE INDEX events_delivered_idx ON dex_collector.events (id) WHERE delivered_at IS NOT NULL;
-- The worker's look at whether it last said runs stopped or started again, every cycle.
CREATE INDEX events_staleness_idx ON dex_collector.events (id) WHERE kind IN ('stale', 'fresh');
-- Retention, and the last day's events in metrics: the old ones, or the new, not every event.
CREATE INDEX events_created_at_idx ON dex_collector.events (created_at);
COMMENT ON TABLE dex_collector.events IS 'dex_collector: changes of a company''s health, runs that failed or were cut short, and runs stopping or starting again';

SELECT pg_catalog.pg_extension_config_dump('dex_collector.companies', '');
SELECT pg_catalog.pg_extension_config_dump('dex_collector.events', '');
SELECT pg_catalog.pg_extension_config_dump('dex_collector.events_id_seq', '');

-- Each company's state from the history it has now (its earlier states are not replayed: a state
-- starts when its latest result was recorded, a failing one when the failures began).
WITH latest AS (
    SELECT DISTINCT ON (r.company_id) r.company_id, r.company_name, r.status, r.http_status, r.run_id,
           r.recorded_at, r.error
      FROM dex_collector.run_results r
     ORDER BY r.company_id, r.run_id DESC
), success AS (
    SELECT DISTINCT ON (r.company_id) r.company_id, r.run_id, r.recorded_at
      FROM dex_collector.run_results r WHERE r.status = 'succeeded'
     ORDER BY r.company_id, r.run_id DESC
), called AS (
    SELECT r.company_id, max(r.run_id) AS run_id
      FROM dex_collector.run_results r WHERE r.status <> 'skipped' GROUP BY r.company_id
), failure AS (
    SELECT DISTINCT ON (r.company_id) r.company_id, r.error
      FROM dex_collector.run_results r WHERE r.status = 'failed'
     ORDER BY r.company_id, r.run_id DESC
), streak AS (
    -- Failures of the run's (the key refused, requests a cancel or a refused key dropped, as the
    -- collector wrote them) are not the company's, as the collector now counts them.
    SELECT f.company_id, count(*) AS failures, min(f.recorded_at) AS since
      FROM dex_collector.run_results f LEFT JOIN success s ON s.company_id = f.company_id
     WHERE f.status = 'failed' AND f.run_id > coalesce(s.run_id, 0)
       AND f.http_status IS DISTINCT FROM 401 AND NOT coalesce(f.error LIKE 'stopped: %', false)
     GROUP BY f.company_id
), policy AS (
    SELECT coalesce(nullif(current_setting('dex_collector.alert_after_failures', true), '')::integer, 3)
               AS after_failures,
           coalesce(nullif(current_setting('dex_collector.alert_after', true), '')::interval,
                    interval '1 hour') AS after
), judged AS (
    SELECT l.company_id, l.company_name, l.status, l.http_status, l.run_id, l.recorded_at, l.error,
           s.run_id AS success_run_id, s.recorded_at AS success_at, c.run_id AS called_run_id,
           f.error AS last_error, coalesce(k.failures, 0) AS failures, k.since AS failing_since,
           coalesce(k.failures >= p.after_failures
                    OR (p.after > interval '0' AND l.recorded_at - k.since >= p.after), false) AS alerted
      FROM latest l CROSS JOIN policy p
      LEFT JOIN success s ON s.company_id = l.company_id
      LEFT JOIN called c ON c.company_id = l.company_id
      LEFT JOIN failure f ON f.company_id = l.company_id
      LEFT JOIN streak k ON k.company_id = l.company_id
)
INSERT INTO dex_collector.companies
       (company_id, company_name, state, state_since, last_attempt_at, last_status, last_run_id,
        last_http_status, last_error, last_success_at, consecutive_failures, failing_since,
        alerted, last_called_run_id, last_success_run_id)
SELECT company_id, company_name,
       -- Skipped for want of credentials; a company the run's deadline left out is judged by the
       -- results before.
       CASE WHEN status = 'skipped' AND error = 'No DEX credentials configured' THEN 'skipped'
            WHEN alerted THEN 'failing'
            WHEN success_at IS NOT NULL THEN 'ok'
            ELSE 'never_collected' END,
       CASE WHEN alerted AND NOT (status = 'skipped' AND error = 'No DEX credentials configured')
            THEN failing_since ELSE recorded_at END,
       recorded_at, status, run_id, http_status, last_error, success_at, failures, failing_since,
       alerted, called_run_id, success_run_id
  FROM judged;

-- The worker's look for a queued run every few seconds, and for the runs not finished (marked
-- interrupted at its start, waited for by the heartbeat): not a scan of every run.
CREATE INDEX runs_unfinished_idx ON dex_collector.runs (id) WHERE status IN ('queued', 'running');

-- The fair order and company_status read companies now, not these.
DROP INDEX dex_collector.run_results_called_idx, dex_collector.run_results_succeeded_idx,
           dex_collector.run_results_failed_idx;

-- Per company: the latest attempt, the latest success, the latest error, how many attempts have
-- failed since the last success, how long ago that success was (NULL: never), and its state.
-- One row of dex_collector.companies each: no scan of the history.
CREATE OR REPLACE VIEW dex_collector.company_status AS
SELECT company_id, company_name, last_attempt_at, last_status, last_success_at, last_error,
       consecutive_failures::bigint AS consecutive_failures,
       date_trunc('second', now() - last_success_at) AS since_last_success,
       state, state_since, last_http_status, failing_since, last_run_id
  FROM dex_collector.companies;
COMMENT ON VIEW dex_collector.company_status IS
    'dex_collector: per company, last attempt, last success, last error, consecutive failures, time since last success, state';

-- An event as the JSON NOTIFY sends on channel dex_collector, within PostgreSQL's 8000-byte limit
-- whatever it holds (its details are left out, with "truncated": true, in the rare event they
-- would not fit). Events are sent where they are made (history.rs for a company's, run_events()
-- for a run's), not by a trigger on the table, so that restoring a dump sends nothing.
CREATE FUNCTION dex_collector.event_payload(event dex_collector.events) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN octet_length(full_event) <= 7900 THEN full_event
                ELSE jsonb_build_object(
                         'id', event.id, 'kind', event.kind, 'created_at', event.created_at,
                         'company_id', event.company_id, 'run_id', event.run_id,
                         'truncated', true)::text END
      FROM (SELECT jsonb_build_object(
                       'id', event.id, 'kind', event.kind, 'created_at', event.created_at,
                       'company_id', event.company_id, 'company_name', event.company_name,
                       'run_id', event.run_id, 'details', event.details)::text AS full_event) f
$$;

-- A run that failed as a whole, or that the deadline cut short, is an event, sent at commit: once
-- per episode, as a company's failing is. A run that fails as the ended run before it did (the
-- same error, its numbers but HTTP statuses aside), or is cut short after one cut short, says
-- nothing new: a key the endpoint refuses is one event, not one every run.
CREATE FUNCTION dex_collector.run_events() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    event dex_collector.events;
    previous dex_collector.runs;
BEGIN
    SELECT * INTO previous FROM dex_collector.runs
     WHERE id < NEW.id AND status IN ('failed', 'succeeded') ORDER BY id DESC LIMIT 1;
    IF NEW.status = 'failed'
       AND NOT coalesce(previous.status = 'failed'
                        AND regexp_replace(previous.error, '(?<![0-9]|HTTP )[0-9]+', '#', 'g')
                            = regexp_replace(NEW.error, '(?<![0-9]|HTTP )[0-9]+', '#', 'g'),
                        false) THEN
        INSERT INTO dex_collector.events (kind, run_id, details)
        VALUES ('run_failed', NEW.id,
                jsonb_build_object('trigger', NEW.trigger, 'error', left(NEW.error, 1000),
                                   'companies_total', NEW.companies_total,
                                   'companies_processed', NEW.companies_processed))
        RETURNING * INTO event;
    ELSIF NEW.status = 'succeeded' AND NEW.companies_not_reached > 0
          AND NOT coalesce(previous.status = 'succeeded' AND previous.companies_not_reached > 0,
                           false) THEN
        INSERT INTO dex_collector.events (kind, run_id, details)
        VALUES ('run_cut_short', NEW.id,
                jsonb_build_object('trigger', NEW.trigger,
                                   'companies_not_reached', NEW.companies_not_reached,
                                   'companies_total', NEW.companies_total,
                                   'duration_ms', NEW.duration_ms))
        RETURNING * INTO event;
    END IF;
    IF event.id IS NOT NULL THEN
        PERFORM pg_notify('dex_collector', dex_collector.event_payload(event));
    END IF;
    RETURN NULL;
END
$$;
-- A run's row is inserted and then updated to its end, by the collector; a restored dump only
-- inserts rows, so it sends nothing.
CREATE TRIGGER run_events AFTER UPDATE OF status ON dex_collector.runs
    FOR EACH ROW WHEN (OLD.status IN ('queued', 'running') AND NEW.status IN ('failed', 'succeeded'))
    EXECUTE FUNCTION dex_collector.run_events();

-- How often runs are meant to start: the pg_cron job schedule() made in this database, where its
-- schedule is regular (every N seconds, minutes or hours, hourly, daily, ...) and it is not paused
-- (cron.alter_job(..., active := false) means no run is meant to start), else the worker's
-- dex_collector.interval; NULL when neither says. SECURITY DEFINER because pg_cron shows a role
-- only its own jobs; it returns nothing but the interval.
CREATE FUNCTION dex_collector.expected_interval() RETURNS interval
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    schedule text;
    fields text[];
    every interval;
    privileged boolean;
    worker text := nullif(current_setting('dex_collector.interval', true), '');
    worker_every interval;
BEGIN
    -- As written where the library is not loaded in this session: one that is no interval says
    -- nothing, rather than failing health.
    BEGIN
        IF worker::interval > interval '0' THEN
            worker_every := worker::interval;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        worker_every := NULL;
    END;
    -- pg_cron's table, which a superuser made, not one of that name made by another role
    -- where pg_cron is absent: this function runs with its owner's rights. A job whose role may
    -- call dex_collect_all() comes first. One whose role may not (another role allowed pg_cron
    -- can name a job so) gives way to the worker's interval: a weekly schedule would quiet
    -- `stale`, one every second would keep it on. Alone, it is still the schedule: its calls
    -- fail, and `stale` says so.
    IF EXISTS (SELECT FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
                WHERE c.oid = to_regclass('cron.job') AND r.rolsuper) THEN
        EXECUTE 'SELECT j.schedule, has_function_privilege(r.oid, $2, ''EXECUTE'')
                   FROM cron.job j LEFT JOIN pg_roles r ON r.rolname = j.username
                  WHERE j.jobname = $1 AND j.database = current_database() AND j.active
                  ORDER BY 2 DESC NULLS LAST, j.jobid DESC LIMIT 1'
           INTO schedule, privileged
          USING 'dex_collect_all',
                (SELECT to_regprocedure(format('%I.dex_collect_all()', n.nspname))
                   FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                  WHERE e.extname = 'dex_collector');
    END IF;
    IF schedule IS NULL THEN
        RETURN worker_every;
    END IF;
    schedule := lower(btrim(schedule));
    fields := regexp_split_to_array(schedule, '[[:space:]]+');
    -- Character classes in brackets: a backslash would mean something else where
    -- standard_conforming_strings is off. Numbers of two digits at most, steps within their
    -- field: pg_cron takes a step such as */4294967297 (as 1), which no cast here may fail on.
    every := CASE
        WHEN schedule ~ '^[0-9]{1,2} seconds?$' THEN schedule::interval
        WHEN schedule = '@hourly' THEN interval '1 hour'
        WHEN schedule IN ('@daily', '@midnight') THEN interval '1 day'
        WHEN schedule = '@weekly' THEN interval '7 days'
        WHEN cardinality(fields) <> 5 OR fields[3:5] <> ARRAY['*', '*', '*'] THEN NULL
        WHEN fields[1] = '*' AND fields[2] = '*' THEN interval '1 minute'
        WHEN fields[1] ~ '^[*]/([1-9]|[1-5][0-9])$' AND fields[2] = '*'
            THEN make_interval(mins => split_part(fields[1], '/', 2)::int)
        -- Minutes of the hour: the longest gap between two runs, the one across the hour
        -- included (0,5,10 waits 50 minutes from :10).
        WHEN fields[1] ~ '^[0-9]{1,2}(,[0-9]{1,2})*$' AND fields[2] = '*'
            THEN (SELECT make_interval(mins => max(coalesce(next_minute, first_minute + 60) - minute))
                    FROM (SELECT minute, lead(minute) OVER (ORDER BY minute) AS next_minute,
                                 min(minute) OVER () AS first_minute
                            FROM unnest(string_to_array(fields[1], ',')::int[]) AS minute) gaps)
        WHEN fields[1] ~ '^[0-9]{1,2}$' AND fields[2] ~ '^[*]/([1-9]|1[0-9]|2[0-3])$'
            THEN make_interval(hours => split_part(fields[2], '/', 2)::int)
        WHEN fields[1] ~ '^[0-9]{1,2}$' AND fields[2] ~ '^[0-9]{1,2}$' THEN interval '1 day'
    END;
    IF privileged THEN
        RETURN coalesce(every, worker_every);
    END IF;
    RETURN coalesce(worker_every, every);
END
$$;
COMMENT ON FUNCTION dex_collector.expected_interval() IS
    'dex_collector: how often runs are meant to start (the pg_cron job''s schedule, or the worker''s interval); NULL when unknown';

-- How long the worker may take to offer a new event to the webhook: 15 minutes, or twice
-- dex_collector.run_deadline where that is longer (it offers events between its runs); NULL where
-- the webhook has no URL (the setting dex_collector.alert_url, or Vault's secret of that name, as
-- the worker reads them). SECURITY DEFINER to read Vault's names; it returns nothing else.
CREATE FUNCTION dex_collector.alerts_due_within() RETURNS interval
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    deadline text := btrim(current_setting('dex_collector.run_deadline', true));
    run_takes interval;
    url_set boolean := btrim(coalesce(current_setting('dex_collector.alert_url', true), '')) <> '';
BEGIN
    -- Vault's view, which a superuser made, read as the worker reads it (a blank secret is none).
    -- One it cannot decrypt is a URL the worker cannot read either; one this function's owner may
    -- not read says nothing.
    IF NOT url_set AND EXISTS (SELECT FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
                                WHERE c.oid = to_regclass('vault.decrypted_secrets')
                                  AND r.rolsuper) THEN
        BEGIN
            EXECUTE 'SELECT EXISTS (SELECT FROM vault.decrypted_secrets
                                     WHERE name = $1 AND btrim(decrypted_secret, E'' \t\r\n'') <> '''')'
               INTO url_set USING 'dex_collector_alert_url';
        EXCEPTION
            WHEN insufficient_privilege THEN
                url_set := false;
            WHEN OTHERS THEN
                url_set := true;
        END;
    END IF;
    IF NOT url_set THEN
        RETURN NULL;
    END IF;
    -- The setting as the library shows it ('4min'), or as written where the library is not loaded
    -- in this session, where a number alone is milliseconds.
    BEGIN
        run_takes := CASE WHEN deadline ~ '^[0-9]+$'
                          THEN make_interval(secs => deadline::numeric / 1000)
                          ELSE deadline::interval END;
    EXCEPTION WHEN OTHERS THEN
        run_takes := NULL;
    END;
    RETURN greatest(interval '15 minutes', 2 * coalesce(run_takes, interval '4 minutes'));
END
$$;
COMMENT ON FUNCTION dex_collector.alerts_due_within() IS
    'dex_collector: how long the worker may take to offer a new event to the webhook; NULL when it has no URL';

-- One row: is collection healthy? Runs arriving on schedule (stale: none started within two of
-- the expected intervals), the latest one's status, and the companies by state.
CREATE VIEW dex_collector.health AS
WITH latest AS (
    -- A run skipped because another held the lock is no sign that runs go on: a session that
    -- holds the lock for good makes every scheduled call one. Nor is a run of one company (an
    -- app's refresh, say), which goes on with the schedule stopped.
    SELECT r.id, r.status, r.started_at, r.finished_at FROM dex_collector.runs r
     WHERE r.status NOT IN ('queued', 'skipped') AND r.company_id IS NULL
     ORDER BY r.id DESC LIMIT 1
), cadence AS (
    SELECT dex_collector.expected_interval() AS expected_every
), states AS (
    SELECT count(*) FILTER (WHERE c.state = 'ok') AS companies_ok,
           count(*) FILTER (WHERE c.state = 'failing') AS companies_failing,
           count(*) FILTER (WHERE c.state = 'skipped') AS companies_skipped,
           count(*) FILTER (WHERE c.state = 'never_collected') AS companies_never_collected
      FROM dex_collector.companies c
), due AS MATERIALIZED (
    -- Read once per read of health, not once per event it is held against.
    SELECT dex_collector.alerts_due_within() AS within
), outbox AS MATERIALIZED (
    -- Events the webhook was offered and has not taken yet, and those it refused for good since
    -- it last took one (a webhook that refuses everything stays unhealthy until one arrives); each
    -- counted through its partial index, whatever the size of the table.
    SELECT (SELECT count(*) FROM dex_collector.events e
             WHERE e.delivered_at IS NULL AND e.abandoned_at IS NULL AND e.delivery_attempts > 0)
               AS alerts_undelivered,
           (SELECT count(*) FROM dex_collector.events e
             WHERE e.abandoned_at IS NOT NULL AND e.delivered_at IS NULL
               AND e.id > coalesce((SELECT max(d.id) FROM dex_collector.events d
                                     WHERE d.delivered_at IS NOT NULL), 0)) AS alerts_refused,
           -- Events a webhook with a URL has not been offered in the time the worker takes at
           -- most, while nothing was delivered or abandoned in that time either, and none is
           -- being offered: offered by no one (no worker running, or a URL it cannot use). A
           -- backlog the worker works through does not count, nor do events behind one the
           -- receiver has not taken (alerts_undelivered); without a URL, every event waits.
           CASE WHEN w.within IS NULL
                  OR EXISTS (SELECT FROM dex_collector.events o
                              WHERE o.delivered_at IS NULL AND o.abandoned_at IS NULL
                                AND o.delivery_attempts > 0)
                  OR (SELECT d.delivered_at FROM dex_collector.events d
                       WHERE d.delivered_at IS NOT NULL ORDER BY d.id DESC LIMIT 1)
                     > now() - w.within
                  OR (SELECT a.abandoned_at FROM dex_collector.events a
                       WHERE a.abandoned_at IS NOT NULL AND a.delivered_at IS NULL
                       ORDER BY a.id DESC LIMIT 1) > now() - w.within
                THEN 0
                ELSE (SELECT count(*) FROM dex_collector.events e
                       WHERE e.delivered_at IS NULL AND e.abandoned_at IS NULL
                         AND e.delivery_attempts = 0 AND e.created_at < now() - w.within)
           END AS alerts_unsent
      FROM due w
), judged AS (
    SELECT l.id AS last_run_id, l.status AS last_run_status, l.started_at AS last_run_started_at,
           l.finished_at AS last_run_finished_at, k.expected_every,
           k.expected_every IS NOT NULL
               AND coalesce(l.started_at < now() - 2 * k.expected_every, true) AS stale,
           s.*, o.alerts_undelivered, o.alerts_refused, o.alerts_unsent
      FROM cadence k CROSS JOIN states s CROSS JOIN outbox o LEFT JOIN latest l ON true
)
SELECT NOT j.stale AND j.last_run_status IS DISTINCT FROM 'failed' AND j.companies_failing = 0
           AND j.alerts_undelivered = 0 AND j.alerts_refused = 0 AND j.alerts_unsent = 0
           AND j.last_run_id IS NOT NULL
           AS healthy,
       j.*
  FROM judged j;
COMMENT ON VIEW dex_collector.health IS
    'dex_collector: one row: healthy or not, the latest run, whether runs arrive on schedule, companies by state';

-- The health as metrics, one row per metric and label set, for a Prometheus exporter's custom
-- query (sql_exporter, postgres_exporter): gauges all, the label empty where there is none.
CREATE VIEW dex_collector.metrics AS
SELECT 'dex_collector_healthy' AS metric, '' AS label, h.healthy::int::float8 AS value
  FROM dex_collector.health h
UNION ALL
SELECT 'dex_collector_stale', '', h.stale::int::float8 FROM dex_collector.health h
UNION ALL
SELECT 'dex_collector_last_run_age_seconds', '',
       extract(epoch FROM now() - h.last_run_started_at)::float8
  FROM dex_collector.health h WHERE h.last_run_started_at IS NOT NULL
UNION ALL
SELECT 'dex_collector_last_run_succeeded', '', (h.last_run_status = 'succeeded')::int::float8
  FROM dex_collector.health h WHERE h.last_run_status IS NOT NULL
UNION ALL
SELECT 'dex_collector_alerts_undelivered', '', h.alerts_undelivered::float8 FROM dex_collector.health h
UNION ALL
SELECT 'dex_collector_alerts_refused', '', h.alerts_refused::float8 FROM dex_collector.health h
UNION ALL
SELECT 'dex_collector_alerts_unsent', '', h.alerts_unsent::float8 FROM dex_collector.health h
UNION ALL
SELECT 'dex_collector_companies', s.state, count(c.company_id)::float8
  FROM unnest(ARRAY['ok', 'failing', 'skipped', 'never_collected']) AS s(state)
  LEFT JOIN dex_collector.companies c ON c.state = s.state
 GROUP BY s.state
UNION ALL
SELECT 'dex_collector_events_last_day', k.kind, count(e.id)::float8
  FROM unnest(ARRAY['failing', 'recovered', 'skipped', 'collectable', 'run_failed', 'run_cut_short',
                'stale', 'fresh']) AS k(kind)
  LEFT JOIN dex_collector.events e ON e.kind = k.kind AND e.created_at > now() - interval '1 day'
 GROUP BY k.kind;
COMMENT ON VIEW dex_collector.metrics IS
    'dex_collector: health as metrics (metric, label, value), for a Prometheus exporter';

-- A history that stays small: dex_collector.history_detail ('changes', the default) keeps a
-- run_results row only for what is not a success like the one before; every result is counted in
-- the run's row as it comes and in dex_collector.daily_rollups, one row per company per day.
-- One row per company per day (UTC), kept with each result in the statement that records it
-- (history_sql.rs): every result counts here whatever dex_collector.history_detail keeps in
-- run_results, and these rows outlive the detail (dex_collector.rollup_retention).
CREATE TABLE dex_collector.daily_rollups (
    day                   date NOT NULL,
    company_id            uuid NOT NULL,
    company_name          text,
    attempts              integer NOT NULL DEFAULT 0, -- results that called the endpoint
    succeeded             integer NOT NULL DEFAULT 0,
    failed                integer NOT NULL DEFAULT 0,
    skipped               integer NOT NULL DEFAULT 0,
    requests              integer NOT NULL DEFAULT 0, -- HTTP requests: pages and retries
    records_collected     bigint NOT NULL DEFAULT 0,
    machines_updated      bigint NOT NULL DEFAULT 0,
    duration_ms_max       bigint,
    -- The attempts' durations in 60 buckets: bucket b (element b + 1) counts those whose
    -- floor(3 * log2(ms + 1)) is b, the last also all longer ones; each 2^(1/3) wider than the one
    -- before, so a percentile read from its bucket's middle is within 12 %. smallint, to keep the
    -- row small: a bucket stops counting at 32,767 a day (one attempt every 2.6 s, all alike).
    duration_histogram    smallint[] NOT NULL,
    PRIMARY KEY (company_id, day)
) WITH (fillfactor = 80);  -- today's rows are updated at every run: room for those updates in place
CREATE INDEX daily_rollups_day_idx ON dex_collector.daily_rollups (day);
COMMENT ON TABLE dex_collector.daily_rollups IS 'dex_collector: one row per company per day, every result counted';
SELECT pg_catalog.pg_extension_config_dump('dex_collector.daily_rollups', '');

-- The days the history covers now, every result of them counted; durations into the histogram as
-- history_sql.rs's RECORD_RESULTS puts them.
WITH results AS (
    SELECT (rr.recorded_at AT TIME ZONE 'UTC')::date AS day, rr.*,
           CASE WHEN rr.status <> 'skipped' AND rr.duration_ms IS NOT NULL
                THEN least(59, floor(3 * ln(greatest(rr.duration_ms, 0) + 1) / ln(2) + 1e-9))::int
           END AS bucket
      FROM dex_collector.run_results rr
), days AS (
    SELECT day, company_id, (array_agg(company_name ORDER BY recorded_at DESC))[1] AS company_name,
           count(*) FILTER (WHERE status <> 'skipped') AS attempts,
           count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'skipped') AS skipped,
           sum(attempts) AS requests,
           -- As RECORD_RESULTS adds them: no more than bigint holds.
           least(sum(records_collected), 9223372036854775807) AS records_collected,
           least(sum(machines_updated), 9223372036854775807) AS machines_updated,
           max(duration_ms) FILTER (WHERE bucket IS NOT NULL) AS duration_ms_max
      FROM results GROUP BY day, company_id
), buckets AS (
    SELECT day, company_id, bucket, count(*) AS count
      FROM results WHERE bucket IS NOT NULL GROUP BY day, company_id, bucket
), histograms AS (
    SELECT d.day, d.company_id,
           array_agg(least(coalesce(k.count, 0), 32767)::smallint ORDER BY b.bucket) AS duration_histogram
      FROM days d CROSS JOIN generate_series(0, 59) AS b(bucket)
      LEFT JOIN buckets k ON k.day = d.day AND k.company_id = d.company_id AND k.bucket = b.bucket
     GROUP BY d.day, d.company_id
)
INSERT INTO dex_collector.daily_rollups
       (day, company_id, company_name, attempts, succeeded, failed, skipped, requests,
        records_collected, machines_updated, duration_ms_max, duration_histogram)
SELECT d.day, d.company_id, d.company_name, d.attempts, d.succeeded, d.failed, d.skipped,
       d.requests, d.records_collected, d.machines_updated, d.duration_ms_max, h.duration_histogram
  FROM days d JOIN histograms h USING (day, company_id);

-- A company's days: every result counted (whatever dex_collector.history_detail keeps in
-- run_results), with the attempts' median and 95th percentile duration, each read from the middle
-- of the histogram's bucket it falls in (within 12 %, never above the maximum), and the longest.
CREATE VIEW dex_collector.company_days AS
SELECT r.day, r.company_id, r.company_name, r.attempts, r.succeeded, r.failed, r.skipped, r.requests,
       r.records_collected, r.machines_updated, p.duration_ms_p50, p.duration_ms_p95, r.duration_ms_max
  FROM dex_collector.daily_rollups r
  LEFT JOIN LATERAL (
      SELECT least(r.duration_ms_max, round(2 ^ ((min(c.bucket) FILTER (WHERE c.below >= 0.5 * c.total) + 0.5) / 3) - 1)::bigint) AS duration_ms_p50,
             least(r.duration_ms_max, round(2 ^ ((min(c.bucket) FILTER (WHERE c.below >= 0.95 * c.total) + 0.5) / 3) - 1)::bigint) AS duration_ms_p95
        FROM (SELECT u.n - 1 AS bucket, sum(u.count) OVER (ORDER BY u.n) AS below, sum(u.count) OVER () AS total
                FROM unnest(r.duration_histogram) WITH ORDINALITY AS u(count, n)) c
       WHERE c.total > 0) p ON true;
COMMENT ON VIEW dex_collector.company_days IS
    'dex_collector: per company per day (UTC), results by status, records, and duration percentiles';

-- All companies' days added up, one row per day, the percentiles read as in company_days from the
-- sum of the day's histograms, added up when read: a query names its days (WHERE day > ...), so
-- that only those are.
CREATE VIEW dex_collector.daily_totals AS
WITH buckets AS (
    SELECT r.day, u.n, sum(u.count) AS count
      FROM dex_collector.daily_rollups r, unnest(r.duration_histogram) WITH ORDINALITY AS u(count, n)
     GROUP BY r.day, u.n
), days AS (
    SELECT r.day, count(*) AS companies, sum(r.attempts) AS attempts, sum(r.succeeded) AS succeeded,
           sum(r.failed) AS failed, sum(r.skipped) AS skipped, sum(r.requests) AS requests,
           sum(r.records_collected) AS records_collected, sum(r.machines_updated) AS machines_updated,
           max(r.duration_ms_max) AS duration_ms_max
      FROM dex_collector.daily_rollups r GROUP BY r.day
)
SELECT d.day, d.companies, d.attempts, d.succeeded, d.failed, d.skipped, d.requests,
       d.records_collected, d.machines_updated, p.duration_ms_p50, p.duration_ms_p95, d.duration_ms_max
  FROM days d
  LEFT JOIN LATERAL (
      SELECT least(d.duration_ms_max, round(2 ^ ((min(c.bucket) FILTER (WHERE c.below >= 0.5 * c.total) + 0.5) / 3) - 1)::bigint) AS duration_ms_p50,
             least(d.duration_ms_max, round(2 ^ ((min(c.bucket) FILTER (WHERE c.below >= 0.95 * c.total) + 0.5) / 3) - 1)::bigint) AS duration_ms_p95
        FROM (SELECT b.n - 1 AS bucket, sum(b.count) OVER (ORDER BY b.n) AS below, sum(b.count) OVER () AS total
                FROM buckets b WHERE b.day = d.day) c
       WHERE c.total > 0) p ON true;
COMMENT ON VIEW dex_collector.daily_totals IS
    'dex_collector: per day (UTC), all companies: results by status, records, and duration percentiles';

-- What the history takes on disk, table by table (indexes and TOAST included), how many rows the
-- last day added, how long each is kept, and the size once it holds that long at that rate:
-- bytes per row now (live rows as the statistics count them) x rows a day x days kept. NULL: kept for ever
-- (a retention of 0), or no rows to measure yet. companies does not grow with time.
CREATE VIEW dex_collector.history_size AS
WITH kept AS (
    SELECT t.n, t.name, t.relation, t.rows_last_day,
           -- 0 keeps all: no retention. A session that has not loaded the library, and has no
           -- value set, knows no such setting: the library's default (history_sql.rs) applies.
           nullif(coalesce(nullif(current_setting(t.retention, true), ''), t.default_retention)::interval,
                  interval '0') AS retention
      FROM (VALUES
        (1, 'runs', 'dex_collector.runs'::regclass, 'dex_collector.history_retention', '14 days',
         (SELECT count(*) FROM dex_collector.runs WHERE started_at > now() - interval '1 day')),
        (2, 'run_results', 'dex_collector.run_results'::regclass, 'dex_collector.history_retention',
         '14 days',
         (SELECT count(*) FROM dex_collector.run_results
           WHERE run_id >= (SELECT min(id) FROM dex_collector.runs
                             WHERE started_at > now() - interval '1 day'))),
        (3, 'events', 'dex_collector.events'::regclass, 'dex_collector.event_retention', '90 days',
         (SELECT count(*) FROM dex_collector.events WHERE created_at > now() - interval '1 day')),
        (4, 'daily_rollups', 'dex_collector.daily_rollups'::regclass, 'dex_collector.rollup_retention',
         '400 days',
         (SELECT count(*) FROM dex_collector.daily_rollups
           WHERE day = (now() AT TIME ZONE 'UTC')::date - 1)),
        (5, 'companies', 'dex_collector.companies'::regclass, NULL, NULL, NULL)
      ) AS t(n, name, relation, retention, default_retention, rows_last_day)
)
SELECT k.name AS table_name, s.n_live_tup AS rows,
       pg_total_relation_size(k.relation) AS bytes, k.rows_last_day,
       k.retention,
       CASE WHEN k.name = 'companies' THEN pg_total_relation_size(k.relation)
            WHEN k.retention IS NOT NULL AND s.n_live_tup > 0
            THEN (pg_total_relation_size(k.relation)::float8 / s.n_live_tup * k.rows_last_day
                  * extract(epoch FROM k.retention) / 86400)::bigint
       END AS projected_bytes
  FROM kept k JOIN pg_stat_all_tables s ON s.relid = k.relation
 ORDER BY k.n;
COMMENT ON VIEW dex_collector.history_size IS
    'dex_collector: bytes per history table now, rows the last day added, retention, and the size projected at that rate';

REVOKE ALL ON dex_collector.companies, dex_collector.events, dex_collector.health,
    dex_collector.metrics, dex_collector.daily_rollups, dex_collector.company_days,
    dex_collector.daily_totals, dex_collector.history_size FROM PUBLIC;
REVOKE ALL ON FUNCTION dex_collector.expected_interval(), dex_collector.alerts_due_within(),
    dex_collector.run_events(), dex_collector.event_payload(dex_collector.events) FROM PUBLIC;

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
                            'dex_collector.schedule(text)', 'dex_collector.unschedule()',
                            'dex_collector.expected_interval()',
                            'dex_collector.alerts_due_within()']) AS f(signature)
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
                            'dex_collector.company_status', 'dex_collector.runs_id_seq',
                            'dex_collector.companies', 'dex_collector.events', 'dex_collector.events_id_seq',
                            'dex_collector.health', 'dex_collector.metrics',
                            'dex_collector.daily_rollups', 'dex_collector.company_days',
                            'dex_collector.daily_totals', 'dex_collector.history_size']) AS r(relation)
          JOIN pg_class c ON c.oid = to_regclass(r.relation)
        UNION ALL
        -- What monitoring.md has the owner do with the webhook's outbox: offer abandoned events
        -- again, or mark events sent.
        SELECT 'UPDATE (delivered_at, abandoned_at, next_delivery_at, refusals, delivery_attempts)'
               || ' ON TABLE dex_collector.events'
    LOOP
        EXECUTE format('GRANT %s TO %I WITH GRANT OPTION', obj.target, privileged);
    END LOOP;
END
$$;
COMMENT ON FUNCTION dex_collector.settle_privileges() IS
    'dex_collector: revoke what default privileges granted on its objects (and PUBLIC''s use of the DEX functions where Supabase''s API roles exist); grant supautils.privileged_role what it needs';
SELECT dex_collector.settle_privileges();
