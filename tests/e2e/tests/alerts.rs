//! What the background worker sends out, against receivers on loopback: each event to the
//! webhook, signed, in order, once each, however long the receiver is down and across a server
//! restart, and past an event the receiver refuses for good; a heartbeat ping per finished run,
//! `/fail` after a failed one; runs that stop arriving under pg_cron, and their return; a new
//! receiver offered at once what waited for the old one; a lock on an event holding back no run.

use std::time::{Duration, Instant};

use dex_collector_e2e::cluster::{ClusterOptions, TestCluster};
use dex_collector_e2e::deployment::{
    collect_company, notifications, one, sample, wait_until, Deployment, DeploymentOptions,
    OFFER_ABANDONED_EVENTS_AGAIN,
};
use dex_collector_e2e::stand_in::{Behavior, RecordedRequest, StandIn, StandInConfig};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "whsec-dex-test-4b1d";
const HOOK_PATH: &str = "/services/T0/B0/hook";
const PING_PATH: &str = "/ping/5f0e";
/// healthchecks.io's slug URLs carry a query: `/fail` goes in the path before it.
const PING_QUERY: (&str, &str) = ("create", "1");

fn receiver() -> StandIn {
    StandIn::start(StandInConfig {
        receiver_status: Some(200),
        ..StandInConfig::default()
    })
    .unwrap()
}

/// A deployment whose worker sends events to `webhook` and pings `heartbeat`, with the signing
/// key in (an imitation of) Supabase Vault.
fn deployment(webhook: &StandIn, heartbeat: &StandIn) -> Deployment {
    deployment_with(webhook, heartbeat, DeploymentOptions::default())
}

/// [`deployment`], from `options` (their own libraries and settings kept: a delivery URL set there
/// is not replaced).
fn deployment_with(
    webhook: &StandIn,
    heartbeat: &StandIn,
    mut options: DeploymentOptions,
) -> Deployment {
    let defaults = [
        ("dex_collector.database".into(), "dex".into()),
        (
            "dex_collector.alert_url".into(),
            format!("{}{HOOK_PATH}", webhook.url()),
        ),
        (
            "dex_collector.heartbeat_url".into(),
            format!(
                "{}{PING_PATH}?{}={}",
                heartbeat.url(),
                PING_QUERY.0,
                PING_QUERY.1
            ),
        ),
    ];
    for (name, value) in defaults {
        if !options.settings.iter().any(|(set, _)| *set == name) {
            options.settings.push((name, value));
        }
    }
    let deployment = Deployment::start(DeploymentOptions {
        preload: true,
        ..options
    })
    .unwrap();
    deployment
        .client()
        .batch_execute(&format!(
            "CREATE SCHEMA vault;
             CREATE TABLE vault.secrets (name text PRIMARY KEY, secret text);
             CREATE VIEW vault.decrypted_secrets AS SELECT name, secret AS decrypted_secret FROM vault.secrets;
             INSERT INTO vault.secrets VALUES ('dex_collector_alert_secret', '{SECRET}');"
        ))
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || deployment
        .cluster
        .log_contents()
        .contains("dex_collector worker started in database")));
    deployment
}

/// The events a receiver got, their bodies in the order they arrived.
fn received_bodies(requests: &[RecordedRequest]) -> Vec<Value> {
    requests
        .iter()
        .filter(|request| request.path == HOOK_PATH)
        .map(|request| serde_json::from_slice(&request.body).unwrap())
        .collect()
}

/// The events a receiver got, as (event id, kind), in the order they arrived.
fn received_events(requests: &[RecordedRequest]) -> Vec<(i64, String)> {
    received_bodies(requests)
        .iter()
        .map(|body| {
            (
                body["id"].as_i64().unwrap(),
                body["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn collect(deployment: &Deployment, times: usize) {
    for _ in 0..times {
        deployment.collect_all();
    }
}

#[test]
fn events_reach_the_webhook_signed_once_each_and_runs_ping_the_heartbeat() {
    let (webhook, heartbeat) = (receiver(), receiver());
    let deployment = deployment(&webhook, &heartbeat);
    let mut client = deployment.client();
    deployment
        .stand_in
        .set_behavior(sample::ACME, Behavior::ServerError);
    collect(&deployment, 3);
    assert!(
        wait_until(Duration::from_secs(30), || received_events(
            &webhook.requests()
        )
        .len()
            == 3),
        "{:?}\n{}",
        received_events(&webhook.requests()),
        deployment.cluster.log_contents()
    );
    let kinds: Vec<String> = received_events(&webhook.requests())
        .into_iter()
        .map(|(_, kind)| kind)
        .collect();
    assert_eq!(kinds, ["skipped", "skipped", "failing"]);

    // The failing event: text first, every field, the key from its id, a valid signature.
    let request = webhook.requests().pop().unwrap();
    let body = String::from_utf8(request.body.clone()).unwrap();
    assert!(
        body.starts_with(
            r#"{"text":"dex_collector: Acme Vending is failing (3 failures in a row): "#
        ),
        "{body}"
    );
    let event: Value = serde_json::from_str(&body).unwrap();
    let id = event["id"].as_i64().unwrap();
    // Discord's message beside Slack's (Discord refuses a body without `content`): the same line
    // where it holds nothing either escapes.
    assert_eq!(event["content"], event["text"]);
    assert_eq!(event["allowed_mentions"], serde_json::json!({"parse": []}));
    assert_eq!(event["company_id"], sample::ACME);
    assert_eq!(event["details"]["http_status"], 500);
    assert!(request
        .header("idempotency-key")
        .unwrap()
        .starts_with(&format!("dex-collector-event-{id}-")));
    let timestamp = request.header("x-dex-collector-timestamp").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(
        request.header("x-dex-collector-signature"),
        Some(format!("v1={expected}").as_str())
    );
    // The receiver has the request before the worker commits its delivery: wait for the commit.
    let delivery = |client: &mut postgres::Client| -> (i32, bool) {
        let row = client
            .query_one(
                "SELECT delivery_attempts, delivered_at IS NOT NULL FROM dex_collector.events WHERE id = $1",
                &[&id],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(wait_until(Duration::from_secs(30), || delivery(
        &mut client
    )
    .1));
    assert_eq!(delivery(&mut client), (1, true));

    // Ten more failures say nothing more; the success that ends them says so, once.
    collect(&deployment, 10);
    deployment.stand_in.reset();
    collect(&deployment, 1);
    assert!(wait_until(Duration::from_secs(30), || received_events(
        &webhook.requests()
    )
    .len()
        == 4));
    std::thread::sleep(Duration::from_secs(1));
    let kinds: Vec<String> = received_events(&webhook.requests())
        .into_iter()
        .map(|(_, kind)| kind)
        .collect();
    assert_eq!(kinds, ["skipped", "skipped", "failing", "recovered"]);

    // A run that fails as a whole pings /fail; every other run the URL itself, once each.
    deployment.stand_in.set_default_behavior(Behavior::Status {
        status: 401,
        content_type: "application/json".into(),
        body: r#"{"error":"Unauthorized"}"#.into(),
        headers: Vec::new(),
    });
    collect(&deployment, 1);
    let runs: i64 = one(&mut client, "SELECT count(*) FROM dex_collector.runs");
    assert_eq!(runs, 15);
    assert!(
        wait_until(Duration::from_secs(30), || heartbeat.requests().len() == 15),
        "{} pings",
        heartbeat.requests().len()
    );
    std::thread::sleep(Duration::from_secs(1));
    let pings = heartbeat.requests();
    let paths: Vec<String> = pings.iter().map(|r| r.path.clone()).collect();
    let mut expected = vec![PING_PATH.to_string(); 14];
    expected.push(format!("{PING_PATH}/fail"));
    assert_eq!(paths, expected);
    // Each body names its run and whether it succeeded, as the runs table has them.
    let bodies: Vec<Value> = pings
        .iter()
        .map(|ping| serde_json::from_slice(&ping.body).unwrap())
        .collect();
    let recorded: Vec<Value> = client
        .query(
            "SELECT id, status = 'succeeded' FROM dex_collector.runs ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| json!({"run_id": row.get::<_, i64>(0), "succeeded": row.get::<_, bool>(1)}))
        .collect();
    assert_eq!(bodies, recorded);
    assert_eq!(bodies[14]["succeeded"], false);
    let query = vec![(PING_QUERY.0.to_string(), PING_QUERY.1.to_string())];
    assert!(pings.iter().all(|ping| ping.query == query));
    assert!(!deployment.cluster.log_contents().contains(SECRET));
}

#[test]
fn a_receiver_down_for_twenty_runs_gets_every_event_afterwards_in_order_once_each() {
    let (webhook, heartbeat) = (receiver(), receiver());
    webhook.set_receiver_status(503);
    let deployment = deployment(&webhook, &heartbeat)
        .expect_warnings(&["could not be delivered to dex_collector.alert_url: HTTP 503"]);
    // Five episodes: three failures, then a success; twenty runs.
    for cycle in 0..5 {
        deployment
            .stand_in
            .set_behavior(sample::ACME, Behavior::ServerError);
        collect(&deployment, 3);
        deployment.stand_in.reset();
        collect(&deployment, 1);
        if cycle == 2 {
            // A restart in between: the outbox is in the database.
            deployment.cluster.stop_server().unwrap();
            deployment.cluster.start_again().unwrap();
        }
    }
    let mut client_after = deployment.client();
    let events: Vec<i64> = client_after
        .query("SELECT id FROM dex_collector.events ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        events.len(),
        12,
        "two skips, then five episodes of failing and recovered"
    );
    assert!(wait_until(Duration::from_secs(30), || one::<i64>(
        &mut deployment.client(),
        "SELECT alerts_undelivered FROM dex_collector.health"
    ) > 0));
    let healthy: bool = one(
        &mut client_after,
        "SELECT healthy FROM dex_collector.health",
    );
    assert!(!healthy, "undelivered alerts are not healthy");
    let (attempts, error): (i32, String) = {
        let row = client_after
            .query_one(
                "SELECT delivery_attempts, delivery_error FROM dex_collector.events ORDER BY id LIMIT 1",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(attempts >= 1);
    assert_eq!(error, "HTTP 503");
    let none_later: i64 = one(
        &mut client_after,
        "SELECT count(*) FROM dex_collector.events WHERE id > (SELECT min(id) FROM dex_collector.events)
            AND delivery_attempts > 0",
    );
    assert_eq!(
        none_later, 0,
        "no event overtakes the first undelivered one"
    );

    let down_requests = webhook.requests().len();
    webhook.set_receiver_status(200);
    // The first event's backoff (10 s, doubled per attempt, with jitter) decides when.
    assert!(
        wait_until(Duration::from_secs(120), || {
            one::<i64>(
                &mut deployment.client(),
                "SELECT count(*) FROM dex_collector.events WHERE delivered_at IS NULL",
            ) == 0
        }),
        "not all delivered"
    );
    let after_up = &webhook.requests()[down_requests..];
    let delivered: Vec<i64> = received_events(after_up)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(delivered, events, "every event once, in order");
    let kinds: Vec<String> = received_events(after_up)
        .into_iter()
        .map(|(_, kind)| kind)
        .collect();
    assert_eq!(&kinds[..4], ["skipped", "skipped", "failing", "recovered"]);
    let healthy: bool = one(
        &mut client_after,
        "SELECT healthy FROM dex_collector.health",
    );
    assert!(healthy);
}

#[test]
fn an_event_the_receiver_refuses_for_good_is_abandoned_and_holds_back_no_other() {
    let (webhook, heartbeat) = (receiver(), receiver());
    webhook.set_receiver_status(400);
    let deployment = deployment(&webhook, &heartbeat).expect_warnings(&[
        "could not be delivered to dex_collector.alert_url: HTTP 400",
        "dex_collector.alert_url refused event",
    ]);
    let mut client = deployment.client();
    // The first run's two skips (companies without DEX credentials): each refused three times
    // (10 s, then 20 s apart) and abandoned, the second offered after the first was abandoned.
    collect(&deployment, 1);
    let abandoned = |client: &mut postgres::Client| -> i64 {
        one(
            client,
            "SELECT count(*) FROM dex_collector.events WHERE abandoned_at IS NOT NULL",
        )
    };
    assert!(
        wait_until(Duration::from_secs(150), || abandoned(&mut client) == 2),
        "{}",
        deployment.cluster.log_contents()
    );
    // Each one said, though the second follows the first within the worker's ten minutes of
    // telling a problem once.
    let told = || {
        deployment
            .cluster
            .log_contents()
            .matches("dex_collector.alert_url refused event")
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(5), || told() == 2),
        "{}",
        deployment.cluster.log_contents()
    );
    let rows = client
        .query(
            "SELECT delivery_attempts, refusals, delivery_error, next_delivery_at IS NULL,
                    delivered_at IS NULL
               FROM dex_collector.events ORDER BY id",
            &[],
        )
        .unwrap();
    for row in &rows {
        let attempt: (i32, i32, String, bool, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        assert_eq!(attempt, (3, 3, "HTTP 400".to_string(), true, true));
    }
    let health = |client: &mut postgres::Client| -> (i64, i64, bool) {
        let row = client
            .query_one(
                "SELECT alerts_refused, alerts_undelivered, healthy FROM dex_collector.health",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(health(&mut client), (2, 0, false));
    let refused: f64 = one(
        &mut client,
        "SELECT value FROM dex_collector.metrics WHERE metric = 'dex_collector_alerts_refused'",
    );
    assert_eq!(refused, 2.0);

    // A later event the receiver takes: the refusals before it no longer count against health.
    webhook.set_receiver_status(200);
    deployment
        .stand_in
        .set_behavior(sample::ACME, Behavior::ServerError);
    collect(&deployment, 3);
    assert!(wait_until(Duration::from_secs(30), || {
        received_events(&webhook.requests())
            .last()
            .map(|(_, kind)| kind.clone())
            == Some("failing".to_string())
    }));
    assert!(wait_until(Duration::from_secs(30), || health(&mut client)
        .0
        == 0));
    assert_eq!(abandoned(&mut client), 2);

    // As monitoring.md says: offered again, the abandoned ones go out.
    client.batch_execute(OFFER_ABANDONED_EVENTS_AGAIN).unwrap();
    assert!(wait_until(Duration::from_secs(30), || one::<i64>(
        &mut client,
        "SELECT count(*) FROM dex_collector.events WHERE delivered_at IS NULL"
    ) == 0));
    let kinds: Vec<String> = received_events(&webhook.requests())
        .into_iter()
        .map(|(_, kind)| kind)
        .collect();
    let mut expected = vec!["skipped"; 6];
    expected.extend(["failing", "skipped", "skipped"]);
    assert_eq!(
        kinds, expected,
        "each refused three times, then the rest once each"
    );
}

/// The runs the heartbeat receiver was pinged for, in the order it was.
fn pinged_runs(heartbeat: &StandIn) -> Vec<i64> {
    heartbeat
        .requests()
        .iter()
        .map(|ping| {
            serde_json::from_slice::<Value>(&ping.body).unwrap()["run_id"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

#[test]
fn a_ping_the_receiver_refuses_is_not_sent_again() {
    let (webhook, heartbeat) = (receiver(), receiver());
    heartbeat.set_receiver_status(503);
    let deployment = deployment(&webhook, &heartbeat).expect_warnings(&["the heartbeat for run"]);
    let pinged_runs = || pinged_runs(&heartbeat);
    collect(&deployment, 3);
    assert!(wait_until(Duration::from_secs(30), || pinged_runs().len() >= 3));
    // The worker's next turns (each run wakes it, and it looks at least every 10 s) send none of
    // them again: the next run's ping says the same.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(pinged_runs(), [1, 2, 3]);
    heartbeat.set_receiver_status(200);
    collect(&deployment, 1);
    assert!(wait_until(Duration::from_secs(30), || pinged_runs().len() >= 4));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pinged_runs(), [1, 2, 3, 4]);
}

/// A heartbeat URL the worker cannot use (a Vault secret is checked only when it is read) holds
/// back the pings alone: the webhook still gets its events. The runs that finished meanwhile are
/// not pinged once it is mended, nor is a run of one company, which an app may make with the
/// schedule stopped; the next run of every company is.
#[test]
fn a_heartbeat_url_the_worker_cannot_use_holds_back_no_event_and_one_company_is_no_ping() {
    let (webhook, heartbeat) = (receiver(), receiver());
    let options = DeploymentOptions {
        settings: vec![("dex_collector.heartbeat_url".into(), String::new())],
        ..DeploymentOptions::default()
    };
    let deployment = deployment_with(&webhook, &heartbeat, options)
        .expect_warnings(&["invalid dex_collector_heartbeat_url: not a URL"]);
    let mut client = deployment.client();
    client
        .batch_execute(
            "INSERT INTO vault.secrets VALUES ('dex_collector_heartbeat_url', 'hc-ping.com/5f0e')",
        )
        .unwrap();
    // Its two companies without credentials are an event each.
    collect(&deployment, 1);
    assert!(
        wait_until(Duration::from_secs(30), || !received_events(
            &webhook.requests()
        )
        .is_empty()),
        "no event reached the webhook\n{}",
        deployment.cluster.log_contents()
    );
    assert!(wait_until(Duration::from_secs(30), || deployment
        .cluster
        .log_contents()
        .contains("invalid dex_collector_heartbeat_url: not a URL")));
    assert_eq!(pinged_runs(&heartbeat), Vec::<i64>::new());

    client
        .execute(
            "UPDATE vault.secrets SET secret = $1 WHERE name = 'dex_collector_heartbeat_url'",
            &[&format!("{}{PING_PATH}", heartbeat.url())],
        )
        .unwrap();
    let company = collect_company(&mut client, sample::ACME);
    assert_eq!(company["run_id"], 2);
    collect(&deployment, 1);
    assert!(wait_until(Duration::from_secs(30), || !pinged_runs(
        &heartbeat
    )
    .is_empty()));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pinged_runs(&heartbeat), [3]);
    let recorded: Vec<Option<String>> = client
        .query(
            "SELECT company_id::text FROM dex_collector.runs ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(recorded, [None, Some(sample::ACME.to_string()), None]);
}

/// A run queued while the worker restarts (a changed database setting restarts it 5 s later),
/// then a SQL call that runs at once: the restarted worker runs the queued one first, before its
/// first turn of deliveries, and pings it, though a later run finished before it started.
#[test]
fn a_restarted_worker_pings_the_queued_run_it_finds_first() {
    let (webhook, heartbeat) = (receiver(), receiver());
    let deployment = deployment(&webhook, &heartbeat);
    let mut client = deployment.client();
    client
        .batch_execute("ALTER DATABASE dex SET dex_collector.run_deadline = '4min'")
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || deployment
        .cluster
        .log_contents()
        .contains("dex_collector worker stopping")));
    // Within the 5 s before the worker starts again.
    let queued: i64 = one(&mut client, "SELECT dex_collect_all_async()");
    client.execute("SELECT dex_collect_all()", &[]).unwrap();
    let status_of_queued = |client: &mut postgres::Client| {
        one::<String>(
            client,
            &format!("SELECT status FROM dex_collector.runs WHERE id = {queued}"),
        )
    };
    assert!(
        wait_until(Duration::from_secs(60), || {
            !["queued", "running"].contains(&status_of_queued(&mut client).as_str())
        }),
        "run {queued} was not run"
    );
    assert_eq!(status_of_queued(&mut client), "succeeded");
    assert!(
        wait_until(Duration::from_secs(30), || pinged_runs(&heartbeat)
            .contains(&queued)),
        "run {queued} was not pinged: {:?}\n{}",
        pinged_runs(&heartbeat),
        deployment.cluster.log_contents()
    );
}

/// worker.rs: what a queued run leaves to send goes before the next queued run starts, not after
/// the last of them.
#[test]
fn the_worker_sends_a_queued_runs_events_before_the_next_queued_run() {
    let (webhook, heartbeat) = (receiver(), receiver());
    let deployment = deployment_with(
        &webhook,
        &heartbeat,
        DeploymentOptions {
            settings: vec![("dex_collector.concurrency".into(), "1".into())],
            stand_in: StandInConfig {
                default_behavior: Behavior::Delay {
                    delay: Duration::from_millis(300),
                    then: Box::new(Behavior::Synthetic),
                },
                ..StandInConfig::default()
            },
            ..DeploymentOptions::default()
        },
    );
    let mut client = deployment.client();
    let row = client
        .query_one(
            "SELECT dex_collect_all_async(), dex_collect_all_async()",
            &[],
        )
        .unwrap();
    let (first, second): (i64, i64) = (row.get(0), row.get(1));
    assert!(wait_until(Duration::from_secs(60), || {
        one::<i64>(
            &mut client,
            &format!("SELECT count(*) FROM dex_collector.runs WHERE id = {second} AND status = 'succeeded'"),
        ) == 1
    }));
    // The first run's events: the two companies without credentials, skipped.
    let sent_before_the_next: Vec<bool> = client
        .query(
            "SELECT coalesce(e.delivered_at < r.started_at, false)
               FROM dex_collector.events e, dex_collector.runs r
              WHERE e.run_id = $1 AND r.id = $2 ORDER BY e.id",
            &[&first, &second],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(sent_before_the_next, [true, true]);
}

#[test]
fn a_new_extension_is_pinged_from_its_first_run() {
    let (webhook, heartbeat) = (receiver(), receiver());
    let deployment = deployment(&webhook, &heartbeat);
    let mut client = deployment.client();
    collect(&deployment, 3);
    assert!(wait_until(Duration::from_secs(30), || heartbeat
        .requests()
        .len()
        == 3));
    // Its history starts afresh, run ids from 1: the worker forgets that it pinged run 3.
    client
        .batch_execute("DROP EXTENSION dex_collector; CREATE EXTENSION dex_collector")
        .unwrap();
    collect(&deployment, 1);
    let run_id: i64 = one(&mut client, "SELECT max(id) FROM dex_collector.runs");
    assert_eq!(run_id, 1);
    assert!(
        wait_until(Duration::from_secs(30), || heartbeat.requests().len() == 4),
        "run 1 of the new extension was not pinged\n{}",
        deployment.cluster.log_contents()
    );
    let ping: Value = serde_json::from_slice(&heartbeat.requests()[3].body).unwrap();
    assert_eq!(ping["run_id"], 1);
}

#[test]
fn an_event_taken_while_the_database_is_read_only_is_sent_once_and_told_once() {
    let (webhook, heartbeat) = (receiver(), receiver());
    webhook.set_receiver_status(503);
    let deployment = deployment(&webhook, &heartbeat).expect_warnings(&[
        "could not be delivered to dex_collector.alert_url: HTTP 503",
        "read-only transaction",
    ]);
    let mut client = deployment.client();
    // The first run's two skips (companies without DEX credentials), offered once and refused.
    collect(&deployment, 1);
    let attempts = |client: &mut postgres::Client| -> i32 {
        one(
            client,
            "SELECT delivery_attempts FROM dex_collector.events ORDER BY id LIMIT 1",
        )
    };
    assert!(wait_until(Duration::from_secs(30), || attempts(
        &mut client
    ) == 1));
    // An incident: the database is made read-only. The worker takes it at its reload; the
    // receiver comes back and takes the event, whose delivery cannot be recorded.
    for statement in [
        "ALTER SYSTEM SET default_transaction_read_only = on",
        "SELECT pg_reload_conf()",
    ] {
        client.batch_execute(statement).unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    let refused = webhook.requests().len();
    webhook.set_receiver_status(200);
    let first: i64 = one(&mut client, "SELECT min(id) FROM dex_collector.events");
    let sent_first = |webhook: &StandIn| {
        received_events(&webhook.requests()[refused..])
            .iter()
            .filter(|(id, _)| *id == first)
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(60), || sent_first(&webhook) == 1),
        "{}",
        deployment.cluster.log_contents()
    );
    // The worker's loop goes on (backing off to a minute between cycles): it tries to record the
    // delivery each cycle, and sends nothing while it cannot.
    std::thread::sleep(Duration::from_secs(40));
    assert_eq!(sent_first(&webhook), 1);
    assert_eq!(webhook.requests().len(), refused + 1);
    let log = deployment.cluster.log_contents();
    assert_eq!(
        log.matches("could not record an attempt to deliver event")
            .count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("could not look for queued runs").count(),
        1,
        "{log}"
    );

    // Writable again: the delivery is recorded, and the second event goes, each once.
    for statement in [
        "SET default_transaction_read_only = off",
        "ALTER SYSTEM RESET default_transaction_read_only",
        "SELECT pg_reload_conf()",
    ] {
        client.batch_execute(statement).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(120), || one::<i64>(
            &mut deployment.client(),
            "SELECT count(*) FROM dex_collector.events WHERE delivered_at IS NULL"
        ) == 0),
        "{}",
        deployment.cluster.log_contents()
    );
    let kinds: Vec<String> = received_events(&webhook.requests()[refused..])
        .into_iter()
        .map(|(_, kind)| kind)
        .collect();
    assert_eq!(kinds, ["skipped", "skipped"]);
}

#[test]
fn runs_that_stop_arriving_are_an_event_and_so_is_their_return() {
    let (webhook, heartbeat) = (receiver(), receiver());
    let deployment = deployment_with(
        &webhook,
        &heartbeat,
        DeploymentOptions {
            also_preload: vec!["pg_cron".into()],
            settings: vec![
                ("cron.database_name".into(), "dex".into()),
                ("cron.use_background_workers".into(), "on".into()),
            ],
            ..DeploymentOptions::default()
        },
    );
    let mut client = deployment.client();
    let mut listener = deployment.listener();
    deployment.collect_all();
    // The web app's migration renames a table the targets query reads: every scheduled call
    // raises, and rolls back with its run's row, so only the runs' absence says so. The last run
    // is moved three minutes back, as if the calls had been failing that long.
    client
        .batch_execute(
            "ALTER TABLE public.machines RENAME TO machines_renamed;
             CREATE EXTENSION pg_cron;
             UPDATE dex_collector.runs SET started_at = started_at - interval '3 minutes',
                                           finished_at = finished_at - interval '3 minutes';",
        )
        .unwrap();
    // Every 2 seconds where pg_cron can (1.5 and later); Debian 12 packages 1.4, every minute.
    let mut schedule = |every: &str| {
        client.execute(
            "SELECT cron.schedule('dex_collect_all', $1, 'SELECT dex_collect_all()')",
            &[&every],
        )
    };
    let (every, seconds) = match schedule("2 seconds") {
        Ok(_) => ("2 seconds", 2.0),
        Err(_) => {
            schedule("* * * * *").unwrap();
            ("1 minute", 60.0)
        }
    };
    let scheduled_at = Instant::now();
    let received = |kind: &str| -> Vec<Value> {
        received_bodies(&webhook.requests())
            .into_iter()
            .filter(|body| body["kind"] == kind)
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(200), || !received("stale").is_empty()),
        "no stale event\n{}",
        deployment.cluster.log_contents()
    );
    // The worker gives a schedule it finds two of its intervals before it calls runs stale.
    assert!(scheduled_at.elapsed() >= Duration::from_secs_f64(2.0 * seconds));
    let stale = received("stale").remove(0);
    let text = stale["text"].as_str().unwrap();
    assert!(
        text.starts_with("dex_collector: no run has started since ")
            && text.ends_with(&format!("runs are meant to start every {every}")),
        "{text}"
    );
    assert_eq!(stale["details"]["expected_every_seconds"], seconds);
    assert!(deployment
        .cluster
        .log_contents()
        .contains("dex_collector worker: dex_collector: no run has started since"));
    // The scheduled calls do fail; the event is said once while it lasts (the worker looks again
    // at least every 10 s).
    assert!(wait_until(Duration::from_secs(90), || one::<i64>(
        &mut client,
        "SELECT count(*) FROM cron.job_run_details WHERE status = 'failed'"
    ) > 0));
    std::thread::sleep(Duration::from_secs(12));
    let stale_events: i64 = one(
        &mut client,
        "SELECT count(*) FROM dex_collector.events WHERE kind = 'stale'",
    );
    assert_eq!(stale_events, 1);

    // A schedule made longer ends `stale` in `health`, but no run came: not `fresh`.
    let reschedule = |client: &mut postgres::Client, to: &str| {
        client
            .execute(
                "SELECT cron.alter_job(jobid, schedule := $1) FROM cron.job
                  WHERE jobname = 'dex_collect_all'",
                &[&to],
            )
            .unwrap();
    };
    reschedule(&mut client, "0 3 * * *");
    assert!(!one::<bool>(
        &mut client,
        "SELECT stale FROM dex_collector.health"
    ));
    std::thread::sleep(Duration::from_secs(12));
    assert!(received("fresh").is_empty());
    reschedule(
        &mut client,
        if seconds < 60.0 {
            "2 seconds"
        } else {
            "* * * * *"
        },
    );

    client
        .batch_execute("ALTER TABLE public.machines_renamed RENAME TO machines")
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(90), || !received("fresh").is_empty()),
        "no fresh event\n{}",
        deployment.cluster.log_contents()
    );
    client
        .batch_execute("SELECT cron.unschedule('dex_collect_all')")
        .unwrap();
    let fresh = received("fresh").remove(0);
    assert!(
        fresh["text"]
            .as_str()
            .unwrap()
            .starts_with("dex_collector: runs start on schedule again (run "),
        "{fresh}"
    );
    let (status, trigger): (String, String) = {
        let row = client
            .query_one(
                "SELECT status, trigger FROM dex_collector.runs WHERE id = $1",
                &[&fresh["run_id"].as_i64().unwrap()],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        (status.as_str(), trigger.as_str()),
        ("succeeded", "pg_cron")
    );
    // Both went out with NOTIFY too, as every event does.
    let notified: Vec<Value> = notifications(&mut listener, Duration::from_secs(1))
        .into_iter()
        .map(|event| event["kind"].clone())
        .filter(|kind| kind == "stale" || kind == "fresh")
        .collect();
    assert_eq!(notified, ["stale", "fresh"]);
}

#[test]
fn a_dead_or_slow_receiver_does_not_slow_a_collection() {
    let (webhook, heartbeat) = (receiver(), receiver());
    let deployment = deployment(&webhook, &heartbeat);
    let time_runs = |runs: usize| {
        let started = Instant::now();
        collect(&deployment, runs);
        started.elapsed() / u32::try_from(runs).unwrap()
    };
    let quick = time_runs(10);
    webhook.set_latency(Duration::from_secs(8));
    heartbeat.set_latency(Duration::from_secs(8));
    deployment
        .stand_in
        .set_behavior(sample::ACME, Behavior::ServerError);
    let slow = time_runs(10);
    // The receivers only ever meet the worker: a run that waited for its ping would take 8 s more
    // (times are per run, the mean of ten; the bound leaves seconds for a busy machine).
    println!("a run, receivers answering at once: {quick:?}; taking 8 s: {slow:?}");
    assert!(
        slow < quick + Duration::from_secs(2),
        "{quick:?}, then {slow:?}"
    );
    assert!(wait_until(Duration::from_secs(60), || !received_events(
        &webhook.requests()
    )
    .is_empty()));
}

#[test]
fn a_promoted_standby_delivers_what_the_lost_primary_could_not() {
    let (webhook, heartbeat) = (receiver(), receiver());
    webhook.set_receiver_status(503);
    let deployment = deployment(&webhook, &heartbeat)
        .expect_warnings(&["could not be delivered to dex_collector.alert_url: HTTP 503"]);
    deployment
        .stand_in
        .set_behavior(sample::ACME, Behavior::ServerError);
    collect(&deployment, 3);
    assert!(wait_until(Duration::from_secs(30), || one::<i64>(
        &mut deployment.client(),
        "SELECT count(*) FROM dex_collector.events WHERE delivery_attempts > 0"
    ) > 0));
    let standby = TestCluster::standby_of(
        &deployment.cluster,
        ClusterOptions {
            shared_preload_libraries: vec!["dex_collector".into()],
            settings: vec![
                ("dex_collector.database".into(), "dex".into()),
                (
                    "dex_collector.alert_url".into(),
                    format!("{}{HOOK_PATH}", webhook.url()),
                ),
            ],
            ..ClusterOptions::default()
        },
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(30), || one::<i64>(
        &mut standby.connect().unwrap(),
        "SELECT count(*) FROM dex_collector.events"
    ) == 3));
    deployment.cluster.stop_server().unwrap();
    let before_failover = webhook.requests().len();
    webhook.set_receiver_status(200);
    standby.promote().unwrap();
    assert!(
        wait_until(Duration::from_secs(120), || one::<i64>(
            &mut standby.connect().unwrap(),
            "SELECT count(*) FROM dex_collector.events WHERE delivered_at IS NULL"
        ) == 0),
        "the promoted standby's worker delivered them"
    );
    let kinds: Vec<String> = received_events(&webhook.requests()[before_failover..])
        .into_iter()
        .map(|(_, kind)| kind)
        .collect();
    assert_eq!(kinds, ["skipped", "skipped", "failing"]);
    standby.check_log(&[]).unwrap();
}

/// The first event's row: its attempts, its refusals in a row, and the seconds until it is due.
fn first_event(client: &mut postgres::Client) -> (i32, i32, f64) {
    let row = client
        .query_one(
            "SELECT delivery_attempts, refusals,
                    coalesce(extract(epoch FROM next_delivery_at - clock_timestamp()), 0)::float8
               FROM dex_collector.events ORDER BY id LIMIT 1",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// A deployment whose first run's events wait for a webhook that answered the first of them 503
/// (with `warning`, a WARNING the test causes), and its receivers: the webhook, the heartbeat.
fn first_event_offered_once(warning: &str) -> (StandIn, StandIn, Deployment) {
    let (webhook, heartbeat) = (receiver(), receiver());
    webhook.set_receiver_status(503);
    let deployment = deployment(&webhook, &heartbeat)
        .expect_warnings(&["delivered to dex_collector.alert_url: HTTP 503", warning]);
    collect(&deployment, 1);
    let mut client = deployment.client();
    assert!(wait_until(Duration::from_secs(30), || first_event(
        &mut client
    )
    .0 == 1));
    (webhook, heartbeat, deployment)
}

/// Points the webhook at `to` (ALTER SYSTEM and a reload).
fn move_webhook(client: &mut postgres::Client, to: &StandIn) {
    client
        .batch_execute(&format!(
            "ALTER SYSTEM SET dex_collector.alert_url = '{}{HOOK_PATH}'",
            to.url()
        ))
        .unwrap();
    client.batch_execute("SELECT pg_reload_conf()").unwrap();
}

/// outbox.rs and delivery.rs: after a long outage of the receiver its next attempt waits an hour;
/// a refusal then waits seconds, not another hour, and a receiver at a new URL is offered what
/// waits at once and afresh, the old one's attempts and refusals forgotten.
#[test]
fn a_new_receiver_is_offered_at_once_what_waited_an_hour_for_the_old_one() {
    let (webhook, _heartbeat, deployment) = first_event_offered_once("HTTP 401");
    let mut client = deployment.client();
    let offer_now = |client: &mut postgres::Client, attempts: i32| {
        client
            .batch_execute(&format!(
                "UPDATE dex_collector.events SET delivery_attempts = {attempts},
                        next_delivery_at = NULL
                  WHERE id = (SELECT min(id) FROM dex_collector.events)"
            ))
            .unwrap();
    };
    // The receiver down for hours: nine attempts so far, and the tenth fails too.
    offer_now(&mut client, 9);
    assert!(wait_until(Duration::from_secs(30), || first_event(
        &mut client
    )
    .0 == 10));
    let (_, _, due_in) = first_event(&mut client);
    assert!(due_in > 2_800.0, "an hour, less a fifth: {due_in}");
    // It comes back refusing the event (its key rotated first): tried again in seconds.
    webhook.set_receiver_status(401);
    offer_now(&mut client, 10);
    assert!(wait_until(Duration::from_secs(30), || first_event(
        &mut client
    )
    .1 == 1));
    let (_, _, due_in) = first_event(&mut client);
    assert!(due_in < 12.5, "10 s, and a fifth more at most: {due_in}");
    // Down again, an hour's wait; then the webhook moves to a new receiver, which refuses it too:
    // offered at once, its first attempt there, tried again in 10 s.
    webhook.set_receiver_status(503);
    offer_now(&mut client, 11);
    assert!(wait_until(Duration::from_secs(30), || first_event(
        &mut client
    )
    .0 == 12));
    assert!(first_event(&mut client).2 > 2_800.0);
    let moved = receiver();
    moved.set_receiver_status(401);
    move_webhook(&mut client, &moved);
    assert!(
        wait_until(Duration::from_secs(30), || !moved.requests().is_empty()),
        "{}",
        deployment.cluster.log_contents()
    );
    assert!(wait_until(Duration::from_secs(5), || first_event(
        &mut client
    )
    .0 == 1));
    let (attempts, refusals, due_in) = first_event(&mut client);
    assert_eq!((attempts, refusals), (1, 1));
    assert!(due_in < 12.5, "{due_in}");
    // Refused twice there; moved again, to one that refuses it once more: not the third refusal
    // in a row, which abandons an event.
    assert!(wait_until(Duration::from_secs(30), || first_event(
        &mut client
    )
    .1 == 2));
    let again = receiver();
    again.set_receiver_status(401);
    move_webhook(&mut client, &again);
    assert!(wait_until(Duration::from_secs(30), || !again
        .requests()
        .is_empty()));
    assert!(wait_until(Duration::from_secs(5), || first_event(
        &mut client
    )
    .0 == 1));
    assert_eq!(first_event(&mut client).1, 1);
    let abandoned: i64 = one(
        &mut client,
        "SELECT count(*) FROM dex_collector.events WHERE abandoned_at IS NOT NULL",
    );
    assert_eq!(abandoned, 0);
    // It takes them: both events, in order.
    again.set_receiver_status(200);
    assert!(
        wait_until(Duration::from_secs(60), || all_delivered(&mut client)),
        "{}",
        deployment.cluster.log_contents()
    );
    let ids: Vec<i64> = one(
        &mut client,
        "SELECT array_agg(id ORDER BY id) FROM dex_collector.events",
    );
    let sent: Vec<i64> = received_events(&again.requests())
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(sent[sent.len() - 2..], ids[..], "{sent:?}");
}

/// [`first_event_offered_once`], and a session that marks the events sent by hand and leaves its
/// transaction open, holding their locks: the webhook, the heartbeat, the deployment, that session.
fn events_locked_by_a_transaction_left_open() -> (StandIn, StandIn, Deployment, postgres::Client) {
    let (webhook, heartbeat, deployment) =
        first_event_offered_once("canceling statement due to lock timeout");
    let mut operator = deployment.client();
    operator
        .batch_execute(
            "BEGIN; UPDATE dex_collector.events SET delivered_at = now() WHERE delivered_at IS NULL",
        )
        .unwrap();
    (webhook, heartbeat, deployment, operator)
}

/// Whether every event has been delivered.
fn all_delivered(client: &mut postgres::Client) -> bool {
    one::<i64>(
        client,
        "SELECT count(*) FROM dex_collector.events WHERE delivered_at IS NULL",
    ) == 0
}

/// delivery.rs: the worker waits for a lock on an event a moment only, so that a statement of
/// monitoring.md run in a transaction left open holds back none of its other work.
#[test]
fn an_event_locked_by_a_transaction_left_open_holds_back_no_run() {
    let (webhook, _heartbeat, deployment, mut operator) =
        events_locked_by_a_transaction_left_open();
    let mut client = deployment.client();
    let refused = webhook.requests().len();
    webhook.set_receiver_status(200);
    assert!(wait_until(Duration::from_secs(30), || webhook
        .requests()
        .len()
        > refused));
    // The worker took the answer and cannot record it meanwhile: a queued run runs all the same.
    let queued: i64 = one(&mut client, "SELECT dex_collect_all_async()");
    let status = |client: &mut postgres::Client| {
        one::<String>(
            client,
            &format!("SELECT status FROM dex_collector.runs WHERE id = {queued}"),
        )
    };
    assert!(
        wait_until(Duration::from_secs(60), || status(&mut client)
            == "succeeded"),
        "run {queued} is {}\n{}",
        status(&mut client),
        deployment.cluster.log_contents()
    );
    // Thought better of: the events go out, the first once since the receiver came back.
    operator.batch_execute("ROLLBACK").unwrap();
    assert!(wait_until(Duration::from_secs(60), || all_delivered(
        &mut client
    )));
    let first: i64 = one(&mut client, "SELECT min(id) FROM dex_collector.events");
    let sent_first = received_events(&webhook.requests()[refused..])
        .iter()
        .filter(|(id, _)| *id == first)
        .count();
    assert_eq!(sent_first, 1);
}

/// delivery.rs: while the events waiting cannot be offered afresh to a new URL (a lock on one),
/// nothing goes to it; before, each turn sent the oldest there again, whatever its backoff.
#[test]
fn a_new_url_gets_nothing_until_the_waiting_events_can_be_offered_to_it_afresh() {
    let (_webhook, _heartbeat, deployment, mut operator) =
        events_locked_by_a_transaction_left_open();
    let mut client = deployment.client();
    let moved = receiver();
    moved.set_receiver_status(503);
    move_webhook(&mut client, &moved);
    std::thread::sleep(Duration::from_secs(30));
    assert_eq!(moved.requests().len(), 0);
    assert!(deployment
        .cluster
        .log_contents()
        .contains("could not offer the events waiting to the new dex_collector.alert_url"));
    // The lock gone, they go to the new URL.
    moved.set_receiver_status(200);
    operator.batch_execute("ROLLBACK").unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || all_delivered(&mut client)),
        "{}",
        deployment.cluster.log_contents()
    );
    assert_eq!(received_events(&moved.requests()).len(), 2);
}
