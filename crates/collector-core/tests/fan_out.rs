//! The fan-out against the stand-in endpoint on loopback, without PostgreSQL: the concurrency
//! bound, the deadline, an interrupt, retries, paging, a rejected key, a host that cannot record,
//! a company whose task dies, connections the endpoint closed between runs, and the run's flow: a
//! Retry-After that holds back every request, the retry budget, an adaptive limit.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dex_collector_core::endpoint::{
    CompanyOutcome, EndpointConfig, RunIdentity, RETRY_BUDGET_SPENT,
};
use dex_collector_core::fan_out::{fan_out, CompanyTask, Executed, Host, Http, Plan};
use dex_collector_core::flow::{Concurrency, Flow, RETRY_BUDGET_BASE, RETRY_BUDGET_RATIO};
use dex_collector_core::summary::{
    CompanyResult, ResultStatus, RunStatus, NO_TARGETS, SKIP_AUTH_REJECTED,
    SKIP_BOOKKEEPING_FAILED, SKIP_CANCELLED, SKIP_DEADLINE, SKIP_NO_CREDENTIALS,
};
use dex_collector_core::target::Target;
use dex_stand_in::{Behavior, Capacity, StandIn, StandInConfig, DEFAULT_SERVICE_KEY};

fn targets(count: usize) -> Vec<Target> {
    (1..=count)
        .map(|n| Target {
            company_id: format!("a0000000-0000-4000-8000-{n:012}"),
            company_name: format!("Company {n}"),
            has_credentials: true,
        })
        .collect()
}

fn endpoint(stand_in: &StandIn) -> EndpointConfig {
    EndpointConfig {
        site_url: stand_in.url(),
        service_key: DEFAULT_SERVICE_KEY.into(),
        request_timeout: Duration::from_secs(10),
        max_pages: 50,
        max_retries: 2,
        max_response_bytes: 1024 * 1024,
    }
}

fn answering(behavior: Behavior) -> StandIn {
    StandIn::start(StandInConfig {
        default_behavior: behavior,
        ..StandInConfig::default()
    })
    .unwrap()
}

/// An adaptive run with no run before it, from `start`, at most `max`.
fn first_adaptive_run(start: usize, max: usize) -> Concurrency {
    Concurrency::Adaptive {
        start,
        max,
        settled: false,
        ceiling: None,
        spread: None,
    }
}

/// A stand-in whose every answer takes `delay`.
fn answering_after(delay: Duration) -> StandIn {
    answering(Behavior::Delay {
        delay,
        then: Box::new(Behavior::Synthetic),
    })
}

/// A company's first request refused with 429 and `retry_after`, the next ones collected.
fn refused_once(retry_after: &str) -> Behavior {
    Behavior::FailTimes {
        failures: 1,
        status: 429,
        retry_after: Some(retry_after.into()),
        then: Box::new(Behavior::Synthetic),
    }
}

/// The run's results, each of which must have succeeded.
fn all_succeeded(executed: &Executed) -> &[CompanyResult] {
    let results = &executed.summary.results;
    assert!(
        results.iter().all(|r| r.status == ResultStatus::Succeeded),
        "{results:?}"
    );
    results
}

fn run() -> RunIdentity {
    RunIdentity {
        id: 7,
        key: "5f0c8a52-2d4e-4d0b-9d7c-0d7e0c1b2a39".into(),
    }
}

fn http() -> Http {
    Http::new(Duration::from_secs(5), 8, None, || {}).expect("an HTTP runtime")
}

/// A host that keeps the companies whose results it was handed, in that order.
struct TestHost {
    recorded: Vec<(String, ResultStatus)>,
    /// The host fails to record from this many results on.
    fail_after: Option<usize>,
    interrupt_at: Option<Instant>,
    interrupts: Cell<u32>,
    /// What `interrupt` answers: stop the run, or serve the interrupt and go on.
    stop_when_interrupted: bool,
}

impl TestHost {
    fn recording_now() -> TestHost {
        TestHost {
            recorded: Vec::new(),
            fail_after: None,
            interrupt_at: None,
            interrupts: Cell::new(0),
            stop_when_interrupted: true,
        }
    }

    fn recorded_with(&self, status: ResultStatus) -> usize {
        self.recorded.iter().filter(|(_, s)| *s == status).count()
    }
}

impl Host for TestHost {
    fn interrupted(&self) -> bool {
        self.interrupt_at.is_some_and(|at| Instant::now() >= at)
    }

    fn interrupt(&mut self) -> bool {
        self.interrupts.set(self.interrupts.get() + 1);
        if !self.stop_when_interrupted {
            self.interrupt_at = None;
        }
        self.stop_when_interrupted
    }

    fn record(&mut self, result: CompanyResult) -> Result<(), String> {
        if self
            .fail_after
            .is_some_and(|limit| self.recorded.len() >= limit)
        {
            return Err("the history is gone".into());
        }
        self.recorded
            .push((result.target.company_id, result.status));
        Ok(())
    }
}

fn collect(
    stand_in: &StandIn,
    targets: &[Target],
    concurrency: usize,
    deadline: Duration,
    host: &mut TestHost,
) -> Executed {
    collect_with(
        stand_in,
        targets,
        Concurrency::Fixed(concurrency),
        deadline,
        host,
    )
}

fn collect_with(
    stand_in: &StandIn,
    targets: &[Target],
    concurrency: Concurrency,
    deadline: Duration,
    host: &mut TestHost,
) -> Executed {
    collect_listing(stand_in, targets, concurrency, deadline, true, host)
}

fn collect_listing(
    stand_in: &StandIn,
    targets: &[Target],
    concurrency: Concurrency,
    deadline: Duration,
    list_results: bool,
    host: &mut TestHost,
) -> Executed {
    let config = endpoint(stand_in);
    collect_configured(&config, targets, concurrency, deadline, list_results, host)
}

fn collect_configured(
    config: &EndpointConfig,
    targets: &[Target],
    concurrency: Concurrency,
    deadline: Duration,
    list_results: bool,
    host: &mut TestHost,
) -> Executed {
    let http = http();
    let run = run();
    let started = Instant::now();
    let plan = Plan {
        run: &run,
        targets,
        flow: Arc::new(Flow::new(concurrency)),
        deadline: started + deadline,
        list_results,
    };
    let call = plan.contract_call(&http, config);
    let executed = fan_out(&http, &plan, &*call, host, started);
    http.shut_down();
    executed
}

/// A run at fixed `concurrency`, each request timed out after `request_timeout`.
fn collect_timing_out(
    stand_in: &StandIn,
    targets: &[Target],
    concurrency: usize,
    request_timeout: Duration,
) -> Executed {
    let config = EndpointConfig {
        request_timeout,
        ..endpoint(stand_in)
    };
    let mut host = TestHost::recording_now();
    collect_configured(
        &config,
        targets,
        Concurrency::Fixed(concurrency),
        Duration::from_secs(30),
        true,
        &mut host,
    )
}

fn statuses(executed: &Executed) -> Vec<(ResultStatus, Option<String>)> {
    executed
        .summary
        .results
        .iter()
        .map(|result| (result.status, result.reason.clone()))
        .collect()
}

#[test]
fn every_company_is_called_at_most_concurrency_at_a_time_and_recorded_as_it_comes() {
    let stand_in = StandIn::start(StandInConfig {
        latency: Duration::from_millis(100),
        ..StandInConfig::default()
    })
    .unwrap();
    let mut targets = targets(12);
    targets[3].has_credentials = false;
    let mut host = TestHost::recording_now();
    let executed = collect(&stand_in, &targets, 3, Duration::from_secs(30), &mut host);
    assert_eq!(stand_in.max_concurrent_requests(), 3);
    assert_eq!(stand_in.request_count(), 11);
    assert_eq!(executed.summary.companies_succeeded(), 11);
    assert_eq!(
        statuses(&executed)[3],
        (ResultStatus::Skipped, Some(SKIP_NO_CREDENTIALS.into()))
    );
    assert_eq!(host.recorded.len(), 12, "each company's result, once");
    assert_eq!(
        host.recorded[1],
        (targets[3].company_id.clone(), ResultStatus::Skipped),
        "the skipped one as soon as the queue reaches it: when the first of three has finished"
    );
    // Every request carries the run's id and a key made of the run key, company and page.
    for request in stand_in.requests() {
        assert_eq!(request.header("x-dex-run-id"), Some("7"));
        let company = request.company_id().unwrap_or_default().to_string();
        assert_eq!(
            request.header("idempotency-key"),
            Some(format!("dex-collector:{}:{company}:1", run().key).as_str())
        );
    }
}

#[test]
fn a_run_that_does_not_list_its_results_keeps_only_their_counts() {
    let stand_in = StandIn::start(StandInConfig::default()).unwrap();
    let mut targets = targets(5);
    targets[4].has_credentials = false;
    let mut host = TestHost::recording_now();
    let executed = collect_listing(
        &stand_in,
        &targets,
        Concurrency::Fixed(8),
        Duration::from_secs(30),
        false,
        &mut host,
    );
    assert!(executed.summary.results.is_empty());
    assert_eq!(executed.summary.companies_succeeded(), 4);
    assert_eq!(executed.summary.companies_skipped(), 1);
    assert_eq!(host.recorded.len(), 5, "every result went to the host");
    assert!(executed.summary.success());
}

#[test]
fn a_run_with_no_targets_fails_and_one_of_skipped_targets_does_not() {
    let stand_in = StandIn::start(StandInConfig::default()).unwrap();
    let mut host = TestHost::recording_now();
    for deadline in [Duration::from_secs(30), Duration::ZERO] {
        let executed = collect(&stand_in, &[], 8, deadline, &mut host);
        assert_eq!(executed.summary.run_error.as_deref(), Some(NO_TARGETS));
        assert_eq!(executed.summary.final_status(), RunStatus::Failed);
        assert!(!executed.summary.deadline_reached);
    }

    let mut skipped = targets(2);
    for target in &mut skipped {
        target.has_credentials = false;
    }
    let executed = collect(&stand_in, &skipped, 8, Duration::from_secs(30), &mut host);
    assert_eq!(executed.summary.final_status(), RunStatus::Succeeded);
    assert_eq!(stand_in.request_count(), 0);
}

#[test]
fn the_deadline_cuts_requests_in_flight_and_skips_the_rest() {
    let stand_in = answering(Behavior::Hang);
    let mut host = TestHost::recording_now();
    let started = Instant::now();
    let executed = collect(
        &stand_in,
        &targets(6),
        2,
        Duration::from_millis(500),
        &mut host,
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(executed.summary.deadline_reached);
    assert_eq!(executed.summary.companies_stopped_at_deadline(), 2);
    assert_eq!(executed.summary.companies_not_reached(), 4);
    assert!(statuses(&executed)[2..]
        .iter()
        .all(|s| s.1.as_deref() == Some(SKIP_DEADLINE)));
    // The deadline's cut is the company's failure: one always slower than the deadline is
    // counted failing like any other.
    assert!(executed.summary.results[..2]
        .iter()
        .all(|result| result.status == ResultStatus::Failed
            && result.history_row()["run_failure"] == false));
    // Each took the time until the deadline, as its result and the day's durations say: one the
    // deadline always cuts short is among the slowest.
    for result in &executed.summary.results[..2] {
        let duration = result.history_row()["duration_ms"].as_i64().unwrap();
        assert!((250..5_000).contains(&duration), "{duration} ms");
    }
    assert_eq!(
        (
            host.recorded_with(ResultStatus::Failed),
            host.recorded_with(ResultStatus::Skipped)
        ),
        (2, 4),
        "the cut-short companies and the ones not reached"
    );
}

#[test]
fn a_deadline_past_before_the_first_call_reaches_no_one() {
    let stand_in = answering(Behavior::Hang);
    let mut host = TestHost::recording_now();
    let executed = collect(&stand_in, &targets(4), 2, Duration::ZERO, &mut host);
    assert!(executed.summary.deadline_reached);
    assert_eq!(executed.summary.companies_not_reached(), 4);
    assert_eq!(executed.summary.companies_stopped_at_deadline(), 0);
    assert_eq!(host.recorded_with(ResultStatus::Skipped), 4);
    assert_eq!(stand_in.request_count(), 0);
}

#[test]
fn an_interrupt_is_handed_to_the_host_and_stops_the_run() {
    let stand_in = answering(Behavior::Hang);
    let mut host = TestHost::recording_now();
    host.interrupt_at = Some(Instant::now() + Duration::from_millis(300));
    let started = Instant::now();
    let executed = collect(
        &stand_in,
        &targets(4),
        2,
        Duration::from_secs(60),
        &mut host,
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served within the poll interval"
    );
    assert_eq!(host.interrupts.get(), 1);
    assert!(executed.cancelled);
    assert_eq!(
        executed.summary.run_error.as_deref(),
        Some("the run was cancelled")
    );
    assert_eq!(
        statuses(&executed)[2..],
        [
            (ResultStatus::Skipped, Some(SKIP_CANCELLED.into())),
            (ResultStatus::Skipped, Some(SKIP_CANCELLED.into()))
        ]
    );
    // The two in flight failed for the run's sake: the history leaves their state as it was.
    assert!(executed.summary.results[..2]
        .iter()
        .all(|result| result.status == ResultStatus::Failed
            && result.history_row()["run_failure"] == true));
    assert!(
        wait_until_idle(&stand_in),
        "no request carries on after the stop"
    );
}

#[test]
fn an_interrupt_the_host_serves_lets_the_run_go_on() {
    let stand_in = StandIn::start(StandInConfig {
        latency: Duration::from_millis(300),
        ..StandInConfig::default()
    })
    .unwrap();
    let mut host = TestHost::recording_now();
    host.stop_when_interrupted = false;
    host.interrupt_at = Some(Instant::now() + Duration::from_millis(100));
    let executed = collect(
        &stand_in,
        &targets(4),
        2,
        Duration::from_secs(30),
        &mut host,
    );
    assert_eq!(host.interrupts.get(), 1);
    assert!(!executed.cancelled);
    assert_eq!(executed.summary.companies_succeeded(), 4);
}

fn wait_until_idle(stand_in: &StandIn) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if stand_in.requests_being_answered() == 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn transient_failures_are_retried_and_pages_followed() {
    let stand_in = answering(Behavior::FailTimes {
        failures: 2,
        status: 503,
        retry_after: Some("0".into()),
        then: Box::new(Behavior::Paged {
            total_records: 40,
            machines_per_page: 1,
        }),
    });
    let mut host = TestHost::recording_now();
    let executed = collect(
        &stand_in,
        &targets(2),
        2,
        Duration::from_secs(30),
        &mut host,
    );
    assert_eq!(executed.summary.results.len(), 2);
    for result in &executed.summary.results {
        assert_eq!(result.status, ResultStatus::Succeeded, "{result:?}");
        assert_eq!(result.outcome.records, 40);
        assert_eq!(result.outcome.pages, 3, "40 records, 15 a page");
        assert_eq!(result.outcome.attempts, 5, "two 503s, then three pages");
    }
}

#[test]
fn a_run_after_the_endpoint_closed_its_idle_connections_loses_no_request() {
    // Node closes a connection idle for 5 s; here sooner. Each run's requests go out at once, on
    // the connections the run before left in the pool.
    let idle = Duration::from_millis(200);
    let stand_in = StandIn::start(StandInConfig {
        keep_alive_timeout: Some(idle),
        ..StandInConfig::default()
    })
    .unwrap();
    let targets = targets(8);
    let endpoint = endpoint(&stand_in);
    let http = http();
    let run = run();
    let collect_again = || {
        let started = Instant::now();
        let plan = Plan {
            run: &run,
            targets: &targets,
            flow: Arc::new(Flow::new(Concurrency::Fixed(targets.len()))),
            deadline: started + Duration::from_secs(30),
            list_results: true,
        };
        let call = plan.contract_call(&http, &endpoint);
        let executed = fan_out(
            &http,
            &plan,
            &*call,
            &mut TestHost::recording_now(),
            started,
        );
        let connections: Vec<u64> = stand_in
            .requests()
            .iter()
            .map(|request| request.connection_id)
            .collect();
        stand_in.reset();
        (executed, connections)
    };
    let (first, first_connections) = collect_again();
    all_succeeded(&first);
    std::thread::sleep(idle * 3);
    let (second, second_connections) = collect_again();
    assert!(
        second_connections
            .iter()
            .all(|id| !first_connections.contains(id)),
        "the endpoint closed the first run's connections: {first_connections:?}, then \
         {second_connections:?}"
    );
    let attempts: Vec<u32> = all_succeeded(&second)
        .iter()
        .map(|result| result.outcome.attempts)
        .collect();
    assert_eq!(attempts, [1; 8], "one request a company: none dropped");
    assert_eq!(second.summary.flow.retries, 0);
    http.shut_down();
}

#[test]
fn a_rejected_key_stops_the_run() {
    let stand_in = StandIn::start(StandInConfig {
        service_key: "another key".into(),
        ..StandInConfig::default()
    })
    .unwrap();
    let mut host = TestHost::recording_now();
    let executed = collect(
        &stand_in,
        &targets(10),
        1,
        Duration::from_secs(30),
        &mut host,
    );
    assert_eq!(stand_in.request_count(), 1);
    assert_eq!(
        executed.summary.run_error.as_deref(),
        Some(SKIP_AUTH_REJECTED)
    );
    assert_eq!(executed.summary.companies_skipped(), 9);
    // The company the key was refused for failed for the run's sake: a key refused for hours is
    // one `run_failed`, not a `failing` event for each company the fair order brings into flight.
    let refused = &executed.summary.results[0];
    assert_eq!(refused.status, ResultStatus::Failed);
    assert_eq!(refused.history_row()["run_failure"], true);
}

#[test]
fn a_rejected_key_whose_body_does_not_come_stops_the_run_all_the_same() {
    for unfinished in [
        cut_off(Behavior::status_page(401)),
        stalled(Behavior::status_page(401)),
    ] {
        let stand_in = answering(unfinished.clone());
        let executed = collect_timing_out(&stand_in, &targets(5), 1, Duration::from_millis(300));
        assert_eq!(stand_in.request_count(), 1, "{unfinished:?}");
        assert_eq!(
            executed.summary.run_error.as_deref(),
            Some(SKIP_AUTH_REJECTED),
            "{unfinished:?}"
        );
        assert_eq!(executed.summary.companies_skipped(), 4, "{unfinished:?}");
        assert_eq!(
            executed.summary.results[0].outcome.http_status,
            Some(401),
            "{unfinished:?}"
        );
    }
}

#[test]
fn a_result_that_cannot_be_recorded_stops_calling_the_endpoint() {
    let stand_in = StandIn::start(StandInConfig {
        latency: Duration::from_millis(50),
        ..StandInConfig::default()
    })
    .unwrap();
    let mut host = TestHost::recording_now();
    host.fail_after = Some(2);
    let executed = collect(
        &stand_in,
        &targets(10),
        1,
        Duration::from_secs(30),
        &mut host,
    );
    assert_eq!(
        stand_in.request_count(),
        3,
        "two recorded, the third not: then no more calls"
    );
    assert_eq!(
        executed.summary.run_error.as_deref(),
        Some(format!("{SKIP_BOOKKEEPING_FAILED}: the history is gone").as_str())
    );
    assert_eq!(executed.summary.companies_skipped(), 7);
    assert_eq!(
        host.recorded.len(),
        2,
        "nothing more is handed to a host that failed"
    );
}

#[test]
fn results_that_cannot_be_recorded_after_the_deadline_still_fail_the_run() {
    let stand_in = StandIn::start(StandInConfig {
        latency: Duration::from_millis(50),
        ..StandInConfig::default()
    })
    .unwrap();
    let mut host = TestHost::recording_now();
    // Two companies at most are answered before the deadline, the third is cut short by it: the
    // first skip that the deadline leaves (the fourth result) cannot be recorded.
    host.fail_after = Some(3);
    let executed = collect(
        &stand_in,
        &targets(10),
        1,
        Duration::from_millis(120),
        &mut host,
    );
    assert!(executed.summary.deadline_reached);
    assert_eq!(
        executed.summary.run_error.as_deref(),
        Some(format!("{SKIP_BOOKKEEPING_FAILED}: the history is gone").as_str())
    );
    assert_eq!(host.recorded.len(), 3);
}

#[test]
fn a_company_whose_task_dies_is_failed_and_recorded() {
    let stand_in = StandIn::start(StandInConfig::default()).unwrap();
    let targets = targets(4);
    let doomed = targets[1].company_id.clone();
    let http = http();
    let run = run();
    let started = Instant::now();
    let plan = Plan {
        run: &run,
        targets: &targets,
        flow: Arc::new(Flow::new(Concurrency::Fixed(2))),
        deadline: started + Duration::from_secs(30),
        list_results: true,
    };
    let contract = plan.contract_call(&http, &endpoint(&stand_in));
    let call = move |target: &Target| -> CompanyTask {
        if target.company_id == doomed {
            Box::pin(async { panic!("a company task dies") })
        } else {
            contract(target)
        }
    };
    let mut host = TestHost::recording_now();
    let executed = fan_out(&http, &plan, &call, &mut host, started);
    http.shut_down();
    let dead = &executed.summary.results[1];
    assert_eq!(dead.status, ResultStatus::Failed);
    assert_eq!(
        dead.outcome,
        CompanyOutcome {
            error: Some("internal error: the company's task ended without a result".into()),
            duration: dead.outcome.duration,
            ..Default::default()
        }
    );
    // Its time from its call to its end, as any result's.
    assert!(dead.outcome.duration > Duration::ZERO);
    assert!(host
        .recorded
        .contains(&(targets[1].company_id.clone(), ResultStatus::Failed)));
    assert_eq!(executed.summary.companies_failed(), 1);
    assert_eq!(executed.summary.companies_succeeded(), 3);
}

#[test]
fn a_retry_after_holds_back_every_request_of_the_run() {
    let stand_in = answering_after(Duration::from_millis(100));
    let targets = targets(4);
    let limited = &targets[0].company_id;
    stand_in.set_behavior(limited, refused_once("1"));
    let mut host = TestHost::recording_now();
    let executed = collect(&stand_in, &targets, 2, Duration::from_secs(30), &mut host);
    let results = all_succeeded(&executed);
    // The first two companies were sent at once; the 429 came at once, the second company's
    // answer 100 ms later, and the third, called then, waited out the rest of the second.
    let third = results[2].outcome.duration;
    assert!(
        third >= Duration::from_millis(800),
        "the third company took {third:?}"
    );
    assert!(results[0].outcome.duration >= Duration::from_secs(1));
    let flow = &executed.summary.flow;
    assert_eq!(flow.overloaded_answers, 1);
    assert_eq!(flow.retries, 1);
    assert!(
        flow.paused >= Duration::from_millis(900) && flow.paused <= Duration::from_millis(1100)
    );
}

/// `then`'s status line and headers, and its body cut off by the connection's end.
fn cut_off(then: Behavior) -> Behavior {
    Behavior::CutOff {
        then: Box::new(then),
    }
}

/// `then`'s status line and headers, and its body never finished.
fn stalled(then: Behavior) -> Behavior {
    Behavior::Stall {
        then: Box::new(then),
    }
}

fn too_many_requests(retry_after: &str) -> Behavior {
    Behavior::Status {
        status: 429,
        content_type: "application/json".into(),
        body: r#"{"success":false,"error":"Too many requests"}"#.into(),
        headers: vec![("Retry-After".into(), retry_after.into())],
    }
}

#[test]
fn a_429_whose_body_is_cut_off_still_holds_back_every_request_of_the_run() {
    let stand_in = answering_after(Duration::from_millis(100));
    let targets = targets(4);
    let limited = &targets[0].company_id;
    stand_in.set_behavior(limited, cut_off(too_many_requests("1")));
    let mut host = TestHost::recording_now();
    let started = Instant::now();
    let executed = collect(&stand_in, &targets, 2, Duration::from_secs(30), &mut host);
    let wall = started.elapsed();
    let results = &executed.summary.results;
    // As a_retry_after_holds_back_every_request_of_the_run: the third company, called 100 ms in,
    // waited out the rest of the 429's second.
    assert!(
        results[2].outcome.duration >= Duration::from_millis(800),
        "{results:?}"
    );
    let refused = &results[0];
    assert_eq!(refused.status, ResultStatus::Failed);
    assert_eq!(
        refused.outcome.attempts, 3,
        "retried after its Retry-After: {refused:?}"
    );
    assert!(
        refused.outcome.duration >= Duration::from_secs(2),
        "{refused:?}"
    );
    assert_eq!(refused.outcome.http_status, Some(429));
    let error = refused.outcome.error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("HTTP 429: ")
            && error.contains(" (its body cut off: connection failed: "),
        "{error}"
    );
    let flow = &executed.summary.flow;
    assert_eq!(flow.overloaded_answers, 3);
    // Two pauses of a second held the run back; the third 429's (no retry is left after it)
    // counts as long as the run lasted after it, which another company's wait for it may make
    // up to a second: never past the run's end.
    assert!(
        flow.paused >= Duration::from_millis(1900) && flow.paused <= wall,
        "{:?} in {wall:?}",
        flow.paused
    );
}

#[test]
fn a_retry_after_counts_from_its_header_not_from_the_end_of_a_slow_body() {
    let stand_in = answering(stalled(too_many_requests("2")));
    let executed = collect_timing_out(&stand_in, &targets(1), 1, Duration::from_secs(1));
    let refused = &executed.summary.results[0];
    assert_eq!(refused.outcome.attempts, 3, "{refused:?}");
    // Each of the three 429s came a second before the timeout ended its body: each holds the run
    // back for the second left of its two, not for two more.
    let flow = &executed.summary.flow;
    assert_eq!(flow.overloaded_answers, 3);
    assert!(
        flow.paused >= Duration::from_millis(1500) && flow.paused < Duration::from_millis(4500),
        "{:?}",
        flow.paused
    );
}

#[test]
fn a_status_line_other_than_2xx_decides_an_answer_whose_body_did_not_come() {
    let stand_in = answering(Behavior::Synthetic);
    let targets = targets(5);
    let with = |n: usize, behavior| stand_in.set_behavior(&targets[n].company_id, behavior);
    with(0, cut_off(Behavior::ServerError));
    with(1, stalled(Behavior::status_page(500)));
    with(2, stalled(too_many_requests("0")));
    with(3, cut_off(Behavior::Synthetic));
    with(4, stalled(Behavior::Synthetic));
    let executed = collect_timing_out(&stand_in, &targets, 5, Duration::from_millis(300));
    let outcomes: Vec<(Option<u16>, u32, String)> = executed
        .summary
        .results
        .iter()
        .map(|result| {
            assert_eq!(result.status, ResultStatus::Failed, "{result:?}");
            let outcome = &result.outcome;
            let error = outcome.error.clone().unwrap_or_default();
            // The start of the error, and how its body ended.
            let ending = error.find(" (its body").map_or(String::new(), |at| {
                error[at..].chars().take_while(|c| *c != ':').collect()
            });
            let start: String = error.chars().take_while(|c| *c != ':').collect();
            (
                outcome.http_status,
                outcome.attempts,
                format!("{start}{ending}"),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            // Not retried, as a 500 whose body came whole.
            (Some(500), 1, "HTTP 500 (its body cut off".into()),
            (Some(500), 1, "HTTP 500 (its body cut off".into()),
            // Retried, as a 429.
            (Some(429), 3, "HTTP 429 (its body cut off".into()),
            // A 2xx needs its body: what the connection or the timeout says, and retried.
            (Some(200), 3, "connection failed".into()),
            (Some(200), 3, "timed out after 300 ms".into()),
        ]
    );
    let stalled_500 = executed.summary.results[1].outcome.error.as_deref();
    assert!(
        stalled_500
            .is_some_and(|error| error.ends_with("(its body cut off: timed out after 300 ms)")),
        "{stalled_500:?}"
    );
}

#[test]
fn a_pause_that_a_later_429_lengthens_holds_back_the_requests_already_waiting() {
    let stand_in = answering_after(Duration::from_millis(100));
    let targets = targets(4);
    stand_in.set_behavior(&targets[0].company_id, refused_once("1"));
    stand_in.set_behavior(
        &targets[1].company_id,
        Behavior::Delay {
            delay: Duration::from_millis(400),
            then: Box::new(refused_once("2")),
        },
    );
    let mut host = TestHost::recording_now();
    let executed = collect(&stand_in, &targets, 3, Duration::from_secs(30), &mut host);
    let results = all_succeeded(&executed);
    // The first 429 paused the run until 1 s; the fourth company, called at 100 ms, waited for
    // it. The second 429, at 400 ms, moved the end to 2.4 s while it waited: it waited on.
    let fourth = results[3].outcome.duration;
    assert!(
        fourth >= Duration::from_millis(2200),
        "the fourth company took {fourth:?}"
    );
    assert_eq!(executed.summary.flow.overloaded_answers, 2);
}

#[test]
fn the_requests_a_pause_holds_back_come_back_spread_over_a_part_of_it() {
    let stand_in = answering_after(Duration::from_millis(200));
    let targets = targets(15);
    stand_in.set_behavior(&targets[0].company_id, refused_once("2"));
    let mut host = TestHost::recording_now();
    let executed = collect(&stand_in, &targets, 8, Duration::from_secs(30), &mut host);
    let results = all_succeeded(&executed);
    // The 429 came at once and paused the run for 2 s; the seven companies called at 200 ms, as
    // the first answers came, waited for its end, and each up to a quarter of what was left of it
    // (1.8 s) more: not all at the same instant.
    let held_back: Vec<Duration> = results[8..].iter().map(|r| r.outcome.duration).collect();
    let (first, last) = (
        held_back.iter().min().copied().unwrap_or_default(),
        held_back.iter().max().copied().unwrap_or_default(),
    );
    assert!(first >= Duration::from_millis(1900), "{held_back:?}");
    assert!(
        last - first >= Duration::from_millis(50),
        "the held-back companies came back together: {held_back:?}"
    );
}

#[test]
fn a_retry_the_runs_end_leaves_unsent_is_not_counted() {
    // The first company fails at once and is to retry 3 s later (a 502's Retry-After pauses no
    // other request); the key is refused for the second 100 ms in, which stops the run first.
    let stand_in = answering(Behavior::Synthetic);
    let targets = targets(2);
    stand_in.set_behavior(
        &targets[0].company_id,
        Behavior::FailTimes {
            failures: 1,
            status: 502,
            retry_after: Some("3".into()),
            then: Box::new(Behavior::Synthetic),
        },
    );
    stand_in.set_behavior(
        &targets[1].company_id,
        Behavior::Delay {
            delay: Duration::from_millis(100),
            then: Box::new(Behavior::status_page(401)),
        },
    );
    let mut host = TestHost::recording_now();
    let executed = collect(&stand_in, &targets, 2, Duration::from_secs(30), &mut host);
    assert_eq!(
        executed.summary.run_error.as_deref(),
        Some(SKIP_AUTH_REJECTED)
    );
    assert_eq!(stand_in.request_count(), 2, "no retry was sent");
    assert_eq!(executed.summary.flow.retries, 0);
    assert_eq!(executed.summary.flow.retries_refused, 0);
}

#[test]
fn retries_stop_when_the_run_has_spent_its_budget() {
    let stand_in = answering(Behavior::FailTimes {
        failures: 10,
        status: 502,
        retry_after: Some("1".into()),
        then: Box::new(Behavior::Synthetic),
    });
    let companies = 150;
    let mut host = TestHost::recording_now();
    let executed = collect(
        &stand_in,
        &targets(companies),
        companies,
        Duration::from_secs(30),
        &mut host,
    );
    // Every company is called at once and fails at once: the first retries asked for exhaust the
    // budget (the rest refused), and a second retry, a second later, is refused to every one.
    let budget = RETRY_BUDGET_BASE + (companies as f64 * RETRY_BUDGET_RATIO) as u64;
    assert_eq!(executed.summary.flow.retries, budget);
    assert_eq!(executed.summary.flow.retries_refused, companies as u64);
    assert_eq!(stand_in.request_count(), companies as u64 + budget);
    let refused = executed
        .summary
        .results
        .iter()
        .filter(|r| {
            r.reason.as_deref().is_some_and(|reason| {
                reason.ends_with(&format!("(not retried: {RETRY_BUDGET_SPENT})"))
            })
        })
        .count();
    assert_eq!(refused, companies);
}

#[test]
fn an_adaptive_limit_rises_on_an_idle_endpoint_and_never_passes_its_maximum() {
    let stand_in = answering(Behavior::Synthetic);
    stand_in.set_latency(Duration::from_millis(20));
    let mut host = TestHost::recording_now();
    let executed = collect_with(
        &stand_in,
        &targets(300),
        first_adaptive_run(2, 24),
        Duration::from_secs(30),
        &mut host,
    );
    assert!(executed
        .summary
        .results
        .iter()
        .all(|r| r.status == ResultStatus::Succeeded));
    let flow = &executed.summary.flow;
    assert_eq!((flow.start_limit, flow.adaptive_max), (2, Some(24)));
    assert_eq!(flow.highest_limit, 24);
    assert!(stand_in.max_concurrent_requests() <= 24);
    // Its windows measured how widely the answers spread, for the next run.
    assert!(flow.spread.is_some_and(f64::is_finite), "{:?}", flow.spread);
}

/// A request the connection ends before the whole answer came is a dropped request for an
/// adaptive limit, as one with no answer at all: a status line that came first is no answer.
#[test]
fn an_adaptive_limit_falls_when_connections_close_before_the_answer_ends() {
    for behavior in [Behavior::CloseWithoutAnswer, Behavior::CloseMidAnswer] {
        let stand_in = answering(behavior.clone());
        let executed = collect_with(
            &stand_in,
            &targets(16),
            first_adaptive_run(16, 64),
            Duration::from_secs(30),
            &mut TestHost::recording_now(),
        );
        assert!(
            executed
                .summary
                .results
                .iter()
                .all(|r| r.status == ResultStatus::Failed),
            "{behavior:?}"
        );
        let flow = &executed.summary.flow;
        assert_eq!(flow.highest_limit, 16, "{behavior:?}: {flow:?}");
        assert!(flow.lowest_limit < 16, "{behavior:?}: {flow:?}");
    }
}

#[test]
fn a_retry_after_past_the_deadline_holds_back_nothing() {
    let stand_in = answering(Behavior::Synthetic);
    let targets = targets(4);
    stand_in.set_behavior(&targets[0].company_id, refused_once("3600"));
    let mut host = TestHost::recording_now();
    let executed = collect(&stand_in, &targets, 1, Duration::from_secs(30), &mut host);
    let summary = &executed.summary;
    assert!(!summary.deadline_reached);
    assert_eq!(summary.results[0].status, ResultStatus::Failed);
    assert!(summary.results[1..]
        .iter()
        .all(|r| r.status == ResultStatus::Succeeded));
    assert_eq!(summary.flow.paused, Duration::ZERO);
    assert_eq!(
        (summary.flow.overloaded_answers, summary.flow.retries),
        (1, 0)
    );
}

#[test]
fn the_largest_retry_after_fails_the_company_with_its_answer() {
    let stand_in = answering(Behavior::FailTimes {
        failures: 1,
        status: 429,
        retry_after: Some(u64::MAX.to_string()),
        then: Box::new(Behavior::Synthetic),
    });
    let mut host = TestHost::recording_now();
    let executed = collect(
        &stand_in,
        &targets(8),
        8,
        Duration::from_secs(30),
        &mut host,
    );
    // Too far away to wait for, and to add the jitter to: each company fails with the 429, not
    // with its task's panic (before, each had an even chance of overflowing).
    assert_eq!(executed.summary.results.len(), 8);
    for result in &executed.summary.results {
        assert_eq!(result.status, ResultStatus::Failed);
        assert_eq!(result.outcome.http_status, Some(429), "{result:?}");
        assert!(
            !result
                .outcome
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("internal error"),
            "{result:?}"
        );
    }
    assert_eq!(executed.summary.flow.paused, Duration::ZERO);
}

/// A stand-in that serves `workers` requests at once, each for 20 ms, queues `queue` more and
/// refuses the rest with 429; each request takes `service`.
fn with_capacity(workers: usize, queue: usize, service: Duration) -> StandIn {
    StandIn::start(StandInConfig {
        default_behavior: Behavior::Delay {
            delay: service,
            then: Box::new(Behavior::Synthetic),
        },
        capacity: Some(Capacity {
            workers,
            queue,
            retry_after: None,
        }),
        record_requests: false,
        ..StandInConfig::default()
    })
    .unwrap()
}

/// A first adaptive run from `start`, at most `max`, over `companies` companies.
fn collect_adaptively(stand_in: &StandIn, companies: usize, start: usize, max: usize) -> Executed {
    let executed = collect_with(
        stand_in,
        &targets(companies),
        first_adaptive_run(start, max),
        Duration::from_secs(60),
        &mut TestHost::recording_now(),
    );
    all_succeeded(&executed);
    executed
}

#[test]
fn an_adaptive_limit_falls_when_the_endpoint_refuses() {
    let stand_in = with_capacity(8, 4, Duration::from_millis(20));
    let flow = collect_adaptively(&stand_in, 200, 32, 64).summary.flow;
    assert!(stand_in.capacity_report().refused > 0);
    assert!(flow.overloaded_answers > 0);
    assert!(flow.lowest_limit <= 16, "{flow:?}");
    assert!(flow.end_limit.is_some_and(|limit| limit < 32), "{flow:?}");
}

#[test]
fn a_gateway_answering_502_to_everyone_is_a_down_endpoint_for_an_adaptive_limit() {
    // The platform in front of an app that is down: 502 at once, for every company.
    let stand_in = answering(Behavior::Status {
        status: 502,
        content_type: "text/html".into(),
        body: "<html><head><title>502 Bad Gateway</title></head></html>".into(),
        headers: Vec::new(),
    });
    let without_retries = EndpointConfig {
        max_retries: 0,
        ..endpoint(&stand_in)
    };
    let executed = collect_configured(
        &without_retries,
        &targets(60),
        first_adaptive_run(16, 64),
        Duration::from_secs(60),
        true,
        &mut TestHost::recording_now(),
    );
    let flow = executed.summary.flow;
    // Answers at once that grew the limit to the maximum before; now it backs off, and a first
    // run that met nothing else found nothing to hand on.
    assert_eq!(
        (flow.lowest_limit, flow.highest_limit, flow.end_limit),
        (1, 16, None),
        "{flow:?}"
    );
}

#[test]
fn an_adaptive_limit_stays_near_what_the_endpoint_serves_when_it_queues() {
    // Long enough a service that a loaded machine's pauses of a few tens of milliseconds (the
    // other tests run beside this one) do not hide the queue.
    let stand_in = with_capacity(4, 1000, Duration::from_millis(40));
    let flow = collect_adaptively(&stand_in, 200, 2, 64).summary.flow;
    assert_eq!(stand_in.capacity_report().refused, 0);
    // Four at once are served in 40 ms, eight in 80: the queue shows in the median, and the
    // limit stays well below its maximum (where exactly depends on the machine's load).
    assert!(flow.highest_limit < 48, "{flow:?}");
}
