//! The fault-injection suite: every way the endpoint (or the network, or the caller) can fail,
//! each asserted end to end through SQL, each in a server of its own logging at debug5. After
//! each, the whole server log and every history table are searched for the service key, and the
//! log for crashed backends.

use std::io::Write;
use std::time::{Duration, Instant};

use dex_collector_e2e::deployment::{results_by_company, sample, Deployment, DeploymentOptions};
use dex_collector_e2e::stand_in::{Behavior, StandIn, StandInConfig};
use serde_json::Value;

const SECRET_KEY: &str = "sk-live-DEXTEST-7f3c9a1b5e";

/// Runs `dex_collect_all()` with the session settings given and returns its summary.
fn collect_with(deployment: &Deployment, settings: &str) -> Value {
    let mut client = deployment.client();
    client.batch_execute(settings).unwrap();
    client
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0)
}

fn error_of(summary: &Value, company: &str) -> String {
    results_by_company(summary)[company]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A deployment whose endpoint wants a recognisable key, in a server logging at debug5.
fn deployment() -> Deployment {
    Deployment::start(DeploymentOptions {
        stand_in: StandInConfig {
            service_key: SECRET_KEY.into(),
            ..StandInConfig::default()
        },
        settings: vec![
            ("log_min_messages".into(), "debug5".into()),
            ("log_error_verbosity".into(), "verbose".into()),
        ],
        ..DeploymentOptions::default()
    })
    .unwrap()
}

/// The key appears nowhere: not in a history row, not in any server log line; and no backend
/// crashed.
fn assert_key_nowhere_and_no_crash(deployment: &Deployment) {
    let mut observer = deployment.client();
    let history: String = observer
        .query_one(
            "SELECT coalesce(string_agg(r::text, ' '), '') FROM dex_collector.runs r",
            &[],
        )
        .unwrap()
        .get(0);
    let results: String = observer
        .query_one(
            "SELECT coalesce(string_agg(rr::text, ' '), '') FROM dex_collector.run_results rr",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!history.contains(SECRET_KEY) && !results.contains(SECRET_KEY));
    let log = deployment.cluster.log_contents();
    let leaking: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(SECRET_KEY))
        .collect();
    assert!(
        leaking.is_empty(),
        "the key is in the server log:\n{}",
        leaking.join("\n")
    );
    assert!(log.contains("DEBUG:"), "the log was written at debug5");
    assert!(!log.contains("terminated by signal"), "no backend crashed");
    assert!(!log.contains("PANIC"), "no PANIC");
}

#[test]
fn slow_hanging_broken_and_huge_answers_fail_within_their_bounds() {
    let deployment = deployment();
    let stand_in = &deployment.stand_in;
    let quick = "SET dex_collector.request_timeout = '1s'; SET dex_collector.max_retries = 0;";
    // A body that trickles is bounded by the request timeout; a hang likewise.
    stand_in.set_behavior(
        sample::ACME,
        Behavior::Trickle {
            interval: Duration::from_millis(100),
        },
    );
    stand_in.set_behavior(sample::BETA, Behavior::Hang);
    stand_in.set_behavior(sample::COASTAL, Behavior::CloseMidAnswer);
    stand_in.set_behavior(sample::HARBOR, Behavior::HugeBody { bytes: 64 << 20 });
    stand_in.set_behavior(sample::ISLAND, Behavior::ServerError);
    // A status line other than 2xx means what it says, its body whole or not.
    stand_in.set_behavior(
        sample::JUPITER,
        Behavior::Stall {
            then: Box::new(Behavior::ServerError),
        },
    );
    let started = Instant::now();
    let summary = collect_with(&deployment, quick);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(summary["companiesProcessed"], 8);
    assert_eq!(error_of(&summary, sample::ACME), "timed out after 1 s");
    assert_eq!(
        results_by_company(&summary)[sample::ACME]["httpStatus"],
        200
    );
    assert_eq!(error_of(&summary, sample::BETA), "timed out after 1 s");
    assert!(
        error_of(&summary, sample::COASTAL).starts_with("connection failed"),
        "{}",
        error_of(&summary, sample::COASTAL)
    );
    assert!(
        error_of(&summary, sample::HARBOR).contains("larger than dex_collector.max_response_bytes")
    );
    assert_eq!(
        error_of(&summary, sample::ISLAND),
        "HTTP 500: Internal error: db timeout"
    );
    assert_eq!(
        error_of(&summary, sample::JUPITER),
        "HTTP 500: Internal error: db timeout (its body cut off: timed out after 1 s)"
    );
    assert_eq!(
        results_by_company(&summary)[sample::JUPITER]["httpStatus"],
        500
    );
    assert_eq!(summary["successfulCollections"], 2);
    assert_key_nowhere_and_no_crash(&deployment);
}

#[test]
fn transient_failures_are_retried_with_the_same_idempotency_key() {
    let deployment = deployment();
    let stand_in = &deployment.stand_in;
    // 503 twice then OK: three attempts; 429 with Retry-After then OK: two.
    let collect = Box::new(Behavior::Collect {
        records: 2,
        machines: 1,
    });
    stand_in.set_behavior(
        sample::ACME,
        Behavior::FailTimes {
            failures: 2,
            status: 503,
            retry_after: None,
            then: collect.clone(),
        },
    );
    stand_in.set_behavior(
        sample::BETA,
        Behavior::FailTimes {
            failures: 1,
            status: 429,
            retry_after: Some("1".into()),
            then: collect,
        },
    );
    let summary = collect_with(&deployment, "");
    let results = results_by_company(&summary);
    assert_eq!(
        (
            results[sample::ACME]["success"].clone(),
            results[sample::ACME]["attempts"].clone()
        ),
        (Value::Bool(true), 3.into())
    );
    assert_eq!(
        (
            results[sample::BETA]["success"].clone(),
            results[sample::BETA]["attempts"].clone()
        ),
        (Value::Bool(true), 2.into())
    );
    let beta: Vec<_> = stand_in
        .requests()
        .into_iter()
        .filter(|r| r.company_id() == Some(sample::BETA))
        .collect();
    let keys: Vec<_> = beta
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_string())
        .collect();
    assert_eq!(
        keys[0], keys[1],
        "a retry repeats the page's Idempotency-Key"
    );
    assert_key_nowhere_and_no_crash(&deployment);
}

#[test]
fn a_redirect_is_not_followed() {
    let deployment = deployment();
    let stand_in = &deployment.stand_in;
    // A redirect is not followed: the other port receives nothing.
    let elsewhere = StandIn::start(StandInConfig::default()).unwrap();
    stand_in.set_default_behavior(Behavior::Redirect {
        status: 307,
        location: format!("{}/api/dex/collect-bulk", elsewhere.url()),
    });
    let summary = collect_with(&deployment, "");
    assert_eq!(summary["successfulCollections"], 0);
    assert_eq!(
        error_of(&summary, sample::ACME),
        format!(
            "HTTP 307: redirected to {}; redirects are not followed",
            elsewhere.url()
        )
    );
    assert_eq!(elsewhere.request_count(), 0);
    assert_key_nowhere_and_no_crash(&deployment);
}

#[test]
fn a_rejected_key_stops_the_run_at_once() {
    let deployment = deployment();
    let stand_in = &deployment.stand_in;
    // 401: the key is wrong for everyone, so the run stops at once.
    let wrong_key = deployment
        .cluster
        .write_private_file("wrong_key", b"a-wrong-key\n")
        .unwrap();
    let summary = collect_with(
        &deployment,
        &format!(
            "SET dex_collector.service_key_file = '{}'; SET dex_collector.concurrency = 1",
            wrong_key.display()
        ),
    );
    assert_eq!(summary["success"], false);
    assert_eq!(summary["error"], "service key rejected by the endpoint");
    assert_eq!(summary["companiesProcessed"], 1);
    assert_eq!(stand_in.request_count(), 1);
    let skipped_for_key = summary["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["reason"] == "service key rejected by the endpoint")
        .count();
    assert_eq!(skipped_for_key, 7);
    assert_key_nowhere_and_no_crash(&deployment);
}

#[test]
fn an_unresolvable_host_and_an_untrusted_certificate_fail_until_ca_file_trusts_it() {
    let deployment = deployment();
    // An unresolvable host name, and a TLS certificate nobody trusts (then trusted by ca_file).
    let summary = collect_with(&deployment, "SET dex_collector.site_url = 'http://dex-stand-in.invalid'; SET dex_collector.max_retries = 0");
    assert_eq!(summary["successfulCollections"], 0);
    assert!(
        error_of(&summary, sample::ACME).starts_with("could not connect"),
        "{}",
        error_of(&summary, sample::ACME)
    );
    let https = StandIn::start(StandInConfig {
        service_key: SECRET_KEY.into(),
        tls: true,
        ..StandInConfig::default()
    })
    .unwrap();
    let summary = collect_with(
        &deployment,
        &format!(
            "SET dex_collector.site_url = '{}'; SET dex_collector.max_retries = 0",
            https.url()
        ),
    );
    assert_eq!(summary["successfulCollections"], 0);
    let tls_error = error_of(&summary, sample::ACME);
    assert!(tls_error.contains("certificate"), "{tls_error}");
    assert_eq!(https.request_count(), 0);
    let ca_path = std::env::temp_dir().join(format!("dex-collector-ca-{}.pem", std::process::id()));
    std::fs::File::create(&ca_path)
        .unwrap()
        .write_all(https.cert_pem().unwrap().as_bytes())
        .unwrap();
    let summary = collect_with(
        &deployment,
        &format!(
            "SET dex_collector.site_url = '{}'; SET dex_collector.ca_file = '{}'",
            https.url(),
            ca_path.display()
        ),
    );
    assert_eq!(summary["successfulCollections"], 8, "{summary}");

    // A session keeps its client, which read the file once: a certificate renewed in place
    // (here, another server's first) is read again by the session's next run.
    let other = StandIn::start(StandInConfig {
        tls: true,
        ..StandInConfig::default()
    })
    .unwrap();
    std::fs::write(&ca_path, other.cert_pem().unwrap()).unwrap();
    let mut session = deployment.client();
    session
        .batch_execute(&format!(
            "SET dex_collector.site_url = '{}'; SET dex_collector.ca_file = '{}';
             SET dex_collector.max_retries = 0",
            https.url(),
            ca_path.display()
        ))
        .unwrap();
    let mut collect = || -> Value {
        session
            .query_one("SELECT dex_collect_all()", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(collect()["successfulCollections"], 0);
    std::fs::write(&ca_path, https.cert_pem().unwrap()).unwrap();
    let summary = collect();
    assert_eq!(summary["successfulCollections"], 8, "{summary}");
    std::fs::remove_file(&ca_path).unwrap();
    assert_key_nowhere_and_no_crash(&deployment);
}

#[test]
fn a_backend_terminated_mid_run_exits_cleanly_and_leaves_nothing_running() {
    let deployment = deployment();
    let stand_in = &deployment.stand_in;
    // Terminate a backend mid-run: it exits cleanly, the server stays up, no history is left running.
    stand_in.set_default_behavior(Behavior::Hang);
    let mut victim = deployment.client();
    let victim_pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let waiter = std::thread::spawn(move || {
        victim
            .query_one("SELECT dex_collect_all()", &[])
            .map(|_| ())
    });
    assert!(stand_in.wait_for_requests(8, Duration::from_secs(20)));
    let mut observer = deployment.client();
    let shown: String = observer
        .query_one(
            "SELECT query FROM pg_stat_activity WHERE pid = $1",
            &[&victim_pid],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        shown, "SELECT dex_collect_all()",
        "pg_stat_activity shows the call, nothing more"
    );
    let terminated = Instant::now();
    observer
        .batch_execute(&format!("SELECT pg_terminate_backend({victim_pid})"))
        .unwrap();
    let error = waiter
        .join()
        .unwrap()
        .expect_err("the terminated call fails");
    assert!(terminated.elapsed() < Duration::from_secs(10));
    // Its FATAL (57P01), or the connection closed before the client read it: nothing else.
    assert!(
        error.code() == Some(&postgres::error::SqlState::ADMIN_SHUTDOWN) || error.is_closed(),
        "{error}"
    );
    let running: i64 = observer
        .query_one(
            "SELECT count(*) FROM dex_collector.runs WHERE status = 'running'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(running, 0);
    assert_key_nowhere_and_no_crash(&deployment);
}

#[test]
fn ten_thousand_companies_in_one_run() {
    let deployment = deployment();
    let mut observer = deployment.client();
    // 10,000 companies in one run.
    observer
        .batch_execute(
            "INSERT INTO public.companies (id, company_name)
             SELECT ('b0000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid, 'Company ' || n
               FROM generate_series(1, 10000) AS n;
             INSERT INTO public.machines (company_id, status)
             SELECT ('b0000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid, 'active' FROM generate_series(1, 10000) AS n;
             INSERT INTO public.user_credentials (company_id, dex_username)
             SELECT ('b0000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid, 'user' || n FROM generate_series(1, 10000) AS n;",
        )
        .unwrap();
    let summary = collect_with(&deployment, "SET dex_collector.concurrency = 32");
    assert_eq!(summary["companiesProcessed"], 10_008);
    assert_eq!(summary["successfulCollections"], 10_008);
    let recorded: i64 = observer
        .query_one(
            "SELECT count(*) FROM dex_collector.run_results WHERE run_id = $1",
            &[&summary["run_id"].as_i64()],
        )
        .unwrap()
        .get(0);
    assert_eq!(recorded, 10_010);
    assert_key_nowhere_and_no_crash(&deployment);
}

/// A backend's private resident memory (kB), from /proc. Not VmRSS: that also counts the shared
/// buffers the backend has touched, which grow with the history tables, not with a leak.
fn private_rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_backend_does_not_grow_over_a_thousand_runs() {
    let deployment = Deployment::start(DeploymentOptions::default()).unwrap();
    deployment
        .stand_in
        .set_behavior(sample::BETA, Behavior::ServerError);
    deployment.stand_in.set_behavior(
        sample::COASTAL,
        Behavior::Paged {
            total_records: 40,
            machines_per_page: 1,
        },
    );
    let mut client = deployment.client();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    for _ in 0..20 {
        client.query_one("SELECT dex_collect_all()", &[]).unwrap();
    }
    let warm = private_rss_kb(pid);
    for _ in 0..1000 {
        client.query_one("SELECT dex_collect_all()", &[]).unwrap();
    }
    let after = private_rss_kb(pid);
    assert!(
        after < warm + 2048,
        "private memory grew from {warm} kB to {after} kB over 1,000 runs"
    );
}
