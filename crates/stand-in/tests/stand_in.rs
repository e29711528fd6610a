//! The stand-in endpoint against real HTTP clients: reqwest (what the extension uses) for
//! well-formed answers, raw sockets where the bytes on the wire are the point.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use dex_stand_in::{
    synthetic_counts, Behavior, Capacity, StandIn, StandInConfig, COLLECT_PATH, DEFAULT_SERVICE_KEY,
};
use reqwest::blocking::{Client, Response};
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::{json, Value};

const COMPANY: &str = "6f1c1e9a-0000-4000-8000-000000000001";
const OTHER_COMPANY: &str = "6f1c1e9a-0000-4000-8000-000000000002";
/// Generous: only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(10);

fn start(default_behavior: Behavior) -> StandIn {
    StandIn::start(StandInConfig {
        default_behavior,
        ..StandInConfig::default()
    })
    .unwrap()
}

fn client() -> Client {
    Client::builder()
        .timeout(PATIENCE)
        .redirect(Policy::none())
        .build()
        .unwrap()
}

fn collect(client: &Client, stand_in: &StandIn, company_id: &str) -> Response {
    client
        .post(stand_in.collect_url())
        .header("Content-Type", "application/json")
        .header("X-Service-Key", DEFAULT_SERVICE_KEY)
        .header("X-Company-ID", company_id)
        .body("{}")
        .send()
        .unwrap()
}

fn collect_json(stand_in: &StandIn, company_id: &str) -> (StatusCode, Value) {
    let response = collect(&client(), stand_in, company_id);
    let status = response.status();
    (status, response.json().unwrap())
}

/// A request as the extension sends it, for raw sockets.
fn raw_request(company_id: &str, extra_headers: &str) -> String {
    format!(
        "POST {COLLECT_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         X-Service-Key: {DEFAULT_SERVICE_KEY}\r\nX-Company-ID: {company_id}\r\n{extra_headers}\
         Content-Length: 2\r\n\r\n{{}}"
    )
}

/// A raw client connection, for when the bytes on the wire matter.
struct RawConnection {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

/// Status line and lower-cased headers of a response.
type Head = (String, Vec<(String, String)>);

impl RawConnection {
    fn open(stand_in: &StandIn) -> RawConnection {
        let stream = TcpStream::connect(("127.0.0.1", stand_in.port())).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        RawConnection { stream, reader }
    }

    fn send(&mut self, bytes: &str) {
        self.stream.write_all(bytes.as_bytes()).unwrap();
    }

    fn read_head(&mut self) -> Head {
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                return (status_line.trim_end().to_owned(), headers);
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
    }

    /// A complete response with a Content-Length body.
    fn read_response(&mut self) -> (Head, Vec<u8>) {
        let head = self.read_head();
        let len: usize = header(&head.1, "content-length").unwrap().parse().unwrap();
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).unwrap();
        (head, body)
    }

    /// Everything until the server closes the connection.
    fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).unwrap();
        rest
    }

    /// Whether the server closed the connection (EOF or reset) rather than leaving it open.
    fn closed_by_server(&mut self) -> bool {
        let mut byte = [0; 1];
        match self.reader.read(&mut byte) {
            Ok(read) => read == 0,
            Err(error) => !matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(header, _)| header == name)
        .map(|(_, value)| value.as_str())
}

#[test]
fn collect_and_nothing_new_answer_as_the_contract_says() {
    let stand_in = start(Behavior::NothingNew);
    stand_in.set_behavior(
        COMPANY,
        Behavior::Collect {
            records: 12,
            machines: 3,
        },
    );

    let (status, body) = collect_json(&stand_in, COMPANY);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"success": true, "recordsCount": 12, "machinesUpdated": 3, "message": "Collected 12 records"})
    );

    let (status, body) = collect_json(&stand_in, OTHER_COMPANY);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"success": true, "recordsCount": 0, "message": "No new DEX data available"})
    );
}

#[test]
fn synthetic_counts_depend_only_on_the_company() {
    let stand_in = start(Behavior::Synthetic);
    for company_id in [COMPANY, OTHER_COMPANY, COMPANY] {
        let (records, machines) = synthetic_counts(company_id);
        let (_, body) = collect_json(&stand_in, company_id);
        assert_eq!(body["recordsCount"], records);
        assert_eq!(body["machinesUpdated"], machines);
    }
}

#[test]
fn requests_are_recorded_as_received() {
    let stand_in = start(Behavior::NothingNew);
    let client = client();
    client
        .post(format!(
            "{}?limit=15&offset=30&note=a%20b",
            stand_in.collect_url()
        ))
        .header("X-Service-Key", DEFAULT_SERVICE_KEY)
        .header("X-Company-ID", COMPANY)
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .unwrap();
    client.get(stand_in.url()).send().unwrap();

    let requests = stand_in.requests();
    assert_eq!(requests.len(), 2);
    let collect = &requests[0];
    assert_eq!(collect.method, "POST");
    assert_eq!(collect.path, COLLECT_PATH);
    assert_eq!(
        collect.query,
        [("limit", "15"), ("offset", "30"), ("note", "a b")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    assert_eq!(collect.company_id(), Some(COMPANY));
    assert_eq!(collect.header("X-SERVICE-KEY"), Some(DEFAULT_SERVICE_KEY));
    assert_eq!(collect.query_param("offset"), Some("30"));
    assert!(collect
        .headers
        .iter()
        .any(|(name, value)| name == "content-type" && value == "application/json"));
    assert!(collect
        .headers
        .iter()
        .all(|(name, _)| *name == name.to_ascii_lowercase()));
    assert_eq!(collect.body, b"{}");
    assert_eq!(requests[1].method, "GET");
    assert_eq!(requests[1].path, "/");
    assert_eq!(stand_in.request_count(), 2);

    stand_in.reset();
    assert!(stand_in.requests().is_empty());
    assert_eq!(stand_in.request_count(), 0);
}

#[test]
fn without_recording_requests_are_only_counted() {
    let stand_in = StandIn::start(StandInConfig {
        record_requests: false,
        ..StandInConfig::default()
    })
    .unwrap();
    collect_json(&stand_in, COMPANY);
    collect_json(&stand_in, COMPANY);
    assert!(stand_in.requests().is_empty());
    assert_eq!(stand_in.request_count(), 2);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let stand_in = start(Behavior::NothingNew);
    let mut connection = RawConnection::open(&stand_in);
    // One after the other, then two written back to back (pipelined).
    let mut answers = Vec::new();
    connection.send(&raw_request(COMPANY, ""));
    answers.push(connection.read_response());
    connection.send(&raw_request(OTHER_COMPANY, ""));
    answers.push(connection.read_response());
    connection.send(&(raw_request(COMPANY, "") + &raw_request(OTHER_COMPANY, "")));
    answers.push(connection.read_response());
    answers.push(connection.read_response());
    for ((status_line, headers), body) in answers {
        assert_eq!(status_line, "HTTP/1.1 200 OK");
        assert_eq!(header(&headers, "connection"), Some("keep-alive"));
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["success"],
            true
        );
    }
    let mut another = RawConnection::open(&stand_in);
    another.send(&raw_request(COMPANY, ""));
    another.read_response();

    let ids: Vec<u64> = stand_in
        .requests()
        .iter()
        .map(|request| request.connection_id)
        .collect();
    assert_eq!(ids.len(), 5);
    assert!(ids[..4].iter().all(|&id| id == ids[0]), "{ids:?}");
    assert_ne!(ids[4], ids[0], "another connection, another id");
}

#[test]
fn connection_close_is_honoured() {
    let stand_in = start(Behavior::NothingNew);
    let mut connection = RawConnection::open(&stand_in);
    connection.send(&raw_request(COMPANY, "Connection: close\r\n"));
    let ((_, headers), _) = connection.read_response();
    assert_eq!(header(&headers, "connection"), Some("close"));
    assert!(connection.closed_by_server());
}

#[test]
fn a_connection_idle_past_the_keep_alive_timeout_is_closed() {
    let idle = Duration::from_millis(200);
    let stand_in = StandIn::start(StandInConfig {
        default_behavior: Behavior::NothingNew,
        keep_alive_timeout: Some(idle),
        ..StandInConfig::default()
    })
    .unwrap();
    let mut connection = RawConnection::open(&stand_in);
    // Not before the first request, as in Node.
    thread::sleep(idle * 2);
    connection.send(&raw_request(COMPANY, ""));
    connection.read_response();
    connection.send(&raw_request(OTHER_COMPANY, ""));
    connection.read_response();
    let answered = Instant::now();
    assert!(connection.closed_by_server());
    // The server's clock started a moment before this one's.
    assert!(answered.elapsed() >= idle - Duration::from_millis(50));
    let ids: Vec<u64> = stand_in
        .requests()
        .iter()
        .map(|r| r.connection_id)
        .collect();
    assert_eq!(ids, [ids[0], ids[0]], "both on the one connection");
}

#[test]
fn method_path_key_and_company_are_checked_in_order() {
    let stand_in = start(Behavior::NothingNew);
    let client = client();
    let check = |response: Response, status: u16, error: &str| {
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.json::<Value>().unwrap(), json!({ "error": error }));
    };

    // Wrong method beats wrong path and missing credentials.
    check(
        client
            .get(format!("{}/elsewhere", stand_in.url()))
            .send()
            .unwrap(),
        405,
        "Method not allowed",
    );
    check(
        client.put(stand_in.collect_url()).send().unwrap(),
        405,
        "Method not allowed",
    );
    check(
        client
            .post(format!("{}/api/dex/collect", stand_in.url()))
            .send()
            .unwrap(),
        404,
        "Not found",
    );
    check(
        client.post(stand_in.collect_url()).send().unwrap(),
        401,
        "Unauthorized",
    );
    check(
        client
            .post(stand_in.collect_url())
            .header("X-Service-Key", "wrong")
            .header("X-Company-ID", COMPANY)
            .send()
            .unwrap(),
        401,
        "Unauthorized",
    );
    let missing_company = "X-Company-ID header required for service auth";
    check(
        client
            .post(stand_in.collect_url())
            .header("X-Service-Key", DEFAULT_SERVICE_KEY)
            .send()
            .unwrap(),
        400,
        missing_company,
    );
    check(
        client
            .post(stand_in.collect_url())
            .header("X-Service-Key", DEFAULT_SERVICE_KEY)
            .header("X-Company-ID", "")
            .send()
            .unwrap(),
        400,
        missing_company,
    );
}

#[test]
fn the_service_key_is_configurable() {
    let stand_in = StandIn::start(StandInConfig {
        service_key: "s3cret".to_owned(),
        ..StandInConfig::default()
    })
    .unwrap();
    assert_eq!(
        collect(&client(), &stand_in, COMPANY).status(),
        StatusCode::UNAUTHORIZED
    );
    let response = client()
        .post(stand_in.collect_url())
        .header("X-Service-Key", "s3cret")
        .header("X-Company-ID", COMPANY)
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[test]
fn chunked_request_bodies_are_refused() {
    let stand_in = start(Behavior::NothingNew);
    let mut connection = RawConnection::open(&stand_in);
    let request = format!(
        "POST {COLLECT_PATH} HTTP/1.1\r\nHost: x\r\nX-Service-Key: {DEFAULT_SERVICE_KEY}\r\n\
         X-Company-ID: {COMPANY}\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
    );
    connection.send(&request);
    let ((status_line, headers), _) = connection.read_response();
    assert_eq!(status_line, "HTTP/1.1 411 Length Required");
    assert_eq!(header(&headers, "connection"), Some("close"));
    assert!(stand_in.requests().is_empty());
}

#[test]
fn paged_backlog_is_walked_page_by_page() {
    let stand_in = start(Behavior::Paged {
        total_records: 40,
        machines_per_page: 4,
    });
    let client = client();

    // No query: the first page with the default size.
    let first: Value = collect(&client, &stand_in, COMPANY).json().unwrap();
    assert_eq!(
        first,
        json!({
            "success": true, "recordsCount": 15, "machinesUpdated": 4,
            "message": "Collected 15 records", "errors": [],
            "batching": {"limit": 15, "offset": 0, "totalAvailable": 40, "hasMore": true, "nextOffset": 15},
        })
    );

    // Follow nextOffset as the extension should, with the page size it chose.
    let mut pages = Vec::new();
    let mut offset = 0;
    loop {
        let page: Value = client
            .post(format!(
                "{}?limit=15&offset={offset}",
                stand_in.collect_url()
            ))
            .header("X-Service-Key", DEFAULT_SERVICE_KEY)
            .header("X-Company-ID", COMPANY)
            .send()
            .unwrap()
            .json()
            .unwrap();
        pages.push(page["recordsCount"].as_u64().unwrap());
        assert_eq!(page["batching"]["offset"], offset);
        if page["batching"]["hasMore"] == false {
            assert_eq!(page["batching"]["nextOffset"], Value::Null);
            break;
        }
        offset = page["batching"]["nextOffset"].as_u64().unwrap();
    }
    assert_eq!(pages, [15, 15, 10]);

    let wide: Value = client
        .post(format!("{}?limit=100", stand_in.collect_url()))
        .header("X-Service-Key", DEFAULT_SERVICE_KEY)
        .header("X-Company-ID", COMPANY)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(wide["recordsCount"], 40);
    assert_eq!(wide["batching"]["hasMore"], false);
}

#[test]
fn failures_that_are_not_retried() {
    let stand_in = start(Behavior::NoCredentials);
    stand_in.set_behavior(
        COMPANY,
        Behavior::CollectionFailed("Cantaloupe login failed".to_owned()),
    );

    let (status, body) = collect_json(&stand_in, COMPANY);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"success": false, "error": "Cantaloupe login failed"})
    );

    let (status, body) = collect_json(&stand_in, OTHER_COMPANY);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"success": false, "error": "No DEX credentials configured"})
    );
}

#[test]
fn server_error_carries_a_stack() {
    let stand_in = start(Behavior::ServerError);
    let (status, body) = collect_json(&stand_in, COMPANY);
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["success"], false);
    assert_eq!(body["error"], "Internal error: db timeout");
    assert!(body["stack"].as_str().unwrap().contains("\n    at handler"));
    assert!(body["details"].is_string());
}

#[test]
fn arbitrary_statuses_and_platform_pages() {
    let stand_in = start(Behavior::status_page(502));
    stand_in.set_behavior(
        COMPANY,
        Behavior::Status {
            status: 429,
            content_type: "application/json".to_owned(),
            body: r#"{"error":"slow down"}"#.to_owned(),
            headers: vec![("Retry-After".to_owned(), "30".to_owned())],
        },
    );

    let limited = collect(&client(), &stand_in, COMPANY);
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "30");
    assert_eq!(limited.text().unwrap(), r#"{"error":"slow down"}"#);

    let gateway = collect(&client(), &stand_in, OTHER_COMPANY);
    assert_eq!(gateway.status(), StatusCode::BAD_GATEWAY);
    assert!(gateway.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(gateway.text().unwrap().contains("502 Bad Gateway"));
}

#[test]
fn fail_times_counts_per_company_until_reset() {
    let flaky = Behavior::FailTimes {
        failures: 2,
        status: 503,
        retry_after: Some("3".to_owned()),
        then: Box::new(Behavior::Collect {
            records: 5,
            machines: 1,
        }),
    };
    let stand_in = start(flaky.clone());
    let client = client();
    let statuses = |company_id: &str, times: usize| -> Vec<u16> {
        (0..times)
            .map(|_| {
                let response = collect(&client, &stand_in, company_id);
                if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                    assert_eq!(response.headers()["retry-after"], "3");
                }
                response.status().as_u16()
            })
            .collect()
    };

    assert_eq!(statuses(COMPANY, 3), [503, 503, 200]);
    assert_eq!(
        statuses(OTHER_COMPANY, 1),
        [503],
        "each company has its own count"
    );
    assert_eq!(statuses(COMPANY, 1), [200]);

    stand_in.reset();
    assert_eq!(
        statuses(COMPANY, 3),
        [503, 503, 200],
        "reset restarts the count"
    );

    // Setting a behavior restarts that company's count too.
    stand_in.set_behavior(COMPANY, flaky);
    assert_eq!(statuses(COMPANY, 1), [503]);
}

#[test]
fn hang_holds_the_connection_until_the_client_gives_up() {
    let stand_in = start(Behavior::Hang);
    let impatient = Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let error = impatient
        .post(stand_in.collect_url())
        .header("X-Service-Key", DEFAULT_SERVICE_KEY)
        .header("X-Company-ID", COMPANY)
        .send()
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert!(
        stand_in.wait_for_requests(1, PATIENCE),
        "the request was read"
    );
}

#[test]
fn stopping_closes_hanging_connections() {
    let stand_in = start(Behavior::Hang);
    let mut connection = RawConnection::open(&stand_in);
    connection.send(&raw_request(COMPANY, ""));
    assert!(stand_in.wait_for_requests(1, PATIENCE));
    stand_in.stop();
    assert!(connection.closed_by_server());
}

#[test]
fn concurrent_answers_are_counted() {
    let stand_in = start(Behavior::Hang);
    let connections: Vec<RawConnection> = (0..4)
        .map(|_| {
            let mut connection = RawConnection::open(&stand_in);
            connection.send(&raw_request(COMPANY, ""));
            connection
        })
        .collect();
    assert!(stand_in.wait_for_requests(4, PATIENCE));
    assert_eq!(stand_in.max_concurrent_requests(), 4);
    drop(connections);
}

#[test]
fn sequential_answers_peak_at_one_and_reset_clears_the_peak() {
    let stand_in = start(Behavior::NothingNew);
    assert_eq!(stand_in.max_concurrent_requests(), 0);
    // One connection, one request at a time: the server finishes an answer before it reads the
    // next request.
    let mut connection = RawConnection::open(&stand_in);
    for _ in 0..2 {
        connection.send(&raw_request(COMPANY, ""));
        connection.read_response();
    }
    assert_eq!(stand_in.max_concurrent_requests(), 1);
    stand_in.reset();
    assert_eq!(stand_in.max_concurrent_requests(), 0);
    connection.send(&raw_request(COMPANY, ""));
    connection.read_response();
    assert_eq!(stand_in.max_concurrent_requests(), 1);
}

#[test]
fn wait_for_requests_times_out_when_nothing_comes() {
    let stand_in = start(Behavior::NothingNew);
    let started = Instant::now();
    assert!(!stand_in.wait_for_requests(1, Duration::from_millis(100)));
    assert!(started.elapsed() >= Duration::from_millis(100));

    let waiter = thread::scope(|scope| {
        let waiter = scope.spawn(|| stand_in.wait_for_requests(2, PATIENCE));
        collect_json(&stand_in, COMPANY);
        collect_json(&stand_in, COMPANY);
        waiter.join().unwrap()
    });
    assert!(waiter);
}

#[test]
fn trickle_sends_the_body_a_byte_at_a_time() {
    let interval = Duration::from_millis(30);
    let stand_in = start(Behavior::Trickle { interval });
    let mut connection = RawConnection::open(&stand_in);
    connection.send(&raw_request(COMPANY, ""));
    let (status_line, headers) = connection.read_head();
    assert_eq!(status_line, "HTTP/1.1 200 OK");
    assert_eq!(header(&headers, "content-length"), Some("1000000"));

    let started = Instant::now();
    let mut body = [0; 5];
    connection.reader.read_exact(&mut body).unwrap();
    assert_eq!(&body, br#"{"suc"#);
    assert!(
        started.elapsed() >= interval * 4,
        "5 bytes took only {:?}",
        started.elapsed()
    );

    let slow = Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let response = collect(&slow, &stand_in, COMPANY);
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().unwrap_err().is_timeout());
}

#[test]
fn close_without_answer() {
    let stand_in = start(Behavior::CloseWithoutAnswer);
    let mut connection = RawConnection::open(&stand_in);
    connection.send(&raw_request(COMPANY, ""));
    assert!(connection.read_to_end().is_empty());

    let error = client()
        .post(stand_in.collect_url())
        .header("X-Service-Key", DEFAULT_SERVICE_KEY)
        .header("X-Company-ID", COMPANY)
        .send()
        .unwrap_err();
    assert!(!error.is_timeout(), "{error:?}");
}

#[test]
fn close_mid_answer_leaves_the_body_short() {
    let stand_in = start(Behavior::CloseMidAnswer);
    let mut connection = RawConnection::open(&stand_in);
    connection.send(&raw_request(COMPANY, ""));
    let (status_line, headers) = connection.read_head();
    assert_eq!(status_line, "HTTP/1.1 200 OK");
    assert_eq!(header(&headers, "content-length"), Some("1000"));
    assert_eq!(connection.read_to_end().len(), 10);

    let response = collect(&client(), &stand_in, COMPANY);
    assert!(response.text().is_err());
}

#[test]
fn cut_off_and_stall_send_a_whole_head_and_a_short_body() {
    let refusal = Behavior::Status {
        status: 429,
        content_type: "application/json".into(),
        body: r#"{"success":false}"#.into(),
        headers: vec![("Retry-After".into(), "7".into())],
    };
    let stand_in = start(Behavior::CutOff {
        then: Box::new(refusal.clone()),
    });
    let mut connection = RawConnection::open(&stand_in);
    connection.send(&raw_request(COMPANY, ""));
    let (status_line, headers) = connection.read_head();
    assert_eq!(status_line, "HTTP/1.1 429 Too Many Requests");
    assert_eq!(header(&headers, "retry-after"), Some("7"));
    assert_eq!(header(&headers, "content-length"), Some("1017"));
    assert_eq!(connection.read_to_end(), br#"{"success":false}"#);

    stand_in.set_behavior(
        COMPANY,
        Behavior::Stall {
            then: Box::new(refusal),
        },
    );
    let mut connection = RawConnection::open(&stand_in);
    connection
        .stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    connection.send(&raw_request(COMPANY, ""));
    let (status_line, _) = connection.read_head();
    assert_eq!(status_line, "HTTP/1.1 429 Too Many Requests");
    let mut body = [0; 1017];
    let error = connection.reader.read_exact(&mut body).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock, "{error:?}");
}

#[test]
fn invalid_json_and_html_with_200() {
    let stand_in = start(Behavior::InvalidJson);
    stand_in.set_behavior(COMPANY, Behavior::Html200);

    let html = collect(&client(), &stand_in, COMPANY);
    assert_eq!(html.status(), StatusCode::OK);
    assert!(html.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(
        html.text().unwrap(),
        "<html><body>Application error</body></html>"
    );

    let truncated = collect(&client(), &stand_in, OTHER_COMPANY);
    assert_eq!(truncated.status(), StatusCode::OK);
    assert_eq!(truncated.headers()["content-type"], "application/json");
    let text = truncated.text().unwrap();
    assert_eq!(text, r#"{"success":true,"recordsCou"#);
    assert!(serde_json::from_str::<Value>(&text).is_err());
}

#[test]
fn huge_body_is_streamed_in_full_or_until_the_client_leaves() {
    let bytes = 5 * 1024 * 1024 + 7;
    let stand_in = start(Behavior::HugeBody { bytes });
    let client = client();
    let body = collect(&client, &stand_in, COMPANY).bytes().unwrap();
    assert_eq!(body.len() as u64, bytes);
    let parsed: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(parsed["success"], true);

    // Far more than anyone reads: the client stops after a megabyte and the server copes.
    stand_in.set_behavior(OTHER_COMPANY, Behavior::HugeBody { bytes: 1 << 40 });
    let mut response = collect(&client, &stand_in, OTHER_COMPANY);
    assert_eq!(
        response.headers()["content-length"],
        (1u64 << 40).to_string().as_str()
    );
    let mut first_megabyte = vec![0; 1 << 20];
    response.read_exact(&mut first_megabyte).unwrap();
    drop(response);
    stand_in.set_behavior(OTHER_COMPANY, Behavior::NothingNew);
    assert_eq!(collect_json(&stand_in, OTHER_COMPANY).0, StatusCode::OK);
}

#[test]
fn redirects_are_not_followed_here() {
    let stand_in = start(Behavior::Redirect {
        status: 307,
        location: "https://example.invalid/api/dex/collect-bulk".to_owned(),
    });
    let response = collect(&client(), &stand_in, COMPANY);
    assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        response.headers()["location"],
        "https://example.invalid/api/dex/collect-bulk"
    );
}

#[test]
fn delay_and_latency_postpone_answers() {
    let delay = Duration::from_millis(200);
    let stand_in = start(Behavior::Delay {
        delay,
        then: Box::new(Behavior::NothingNew),
    });
    let started = Instant::now();
    assert_eq!(collect_json(&stand_in, COMPANY).0, StatusCode::OK);
    assert!(started.elapsed() >= delay);

    let latency = Duration::from_millis(150);
    stand_in.set_default_behavior(Behavior::NothingNew);
    stand_in.set_latency(latency);
    let started = Instant::now();
    // Latency applies to every answer, refusals included.
    assert_eq!(
        client().get(stand_in.url()).send().unwrap().status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert!(started.elapsed() >= latency);
}

#[test]
fn tls_certificate_is_untrusted_unless_given_as_a_root() {
    let stand_in = StandIn::start(StandInConfig {
        tls: true,
        default_behavior: Behavior::NothingNew,
        ..StandInConfig::default()
    })
    .unwrap();
    assert!(stand_in.url().starts_with("https://127.0.0.1:"));
    let pem = stand_in.cert_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));

    let error = collect_error(&client(), &stand_in);
    assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");

    let trusting = Client::builder()
        .timeout(PATIENCE)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let response = collect(&trusting, &stand_in, COMPANY);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().unwrap()["message"],
        "No new DEX data available"
    );
    // Only the trusted handshake carried a request.
    assert_eq!(stand_in.requests().len(), 1);
}

fn collect_error(client: &Client, stand_in: &StandIn) -> reqwest::Error {
    client
        .post(stand_in.collect_url())
        .header("X-Service-Key", DEFAULT_SERVICE_KEY)
        .header("X-Company-ID", COMPANY)
        .send()
        .unwrap_err()
}

#[test]
fn usable_from_inside_an_async_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stand_in = start(Behavior::NothingNew);
        assert!(stand_in.port() > 0);
        // Dropping inside a runtime must not panic.
        drop(stand_in);
    });
}

#[test]
fn binary_serves_until_terminated() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dex-stand-in"))
        .args([
            "--port",
            "0",
            "--service-key",
            DEFAULT_SERVICE_KEY,
            "--default",
            "nothing-new",
        ])
        .args([
            "--behavior",
            &format!("{COMPANY}=fail-times:1:429:collect:7:2"),
            "--latency-ms",
            "1",
            "--keep-alive-timeout-ms",
            "5000",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");

    let post = |company_id: &str| {
        client()
            .post(format!("{url}{COLLECT_PATH}"))
            .header("X-Service-Key", DEFAULT_SERVICE_KEY)
            .header("X-Company-ID", company_id)
            .send()
            .unwrap()
    };
    assert_eq!(post(COMPANY).status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(post(COMPANY).json::<Value>().unwrap()["recordsCount"], 7);
    assert_eq!(
        post(OTHER_COMPANY).json::<Value>().unwrap()["recordsCount"],
        0
    );

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert!(child.wait().unwrap().success());
}

#[test]
fn binary_rejects_unknown_specs() {
    let output = Command::new(env!("CARGO_BIN_EXE_dex-stand-in"))
        .args(["--service-key", "k", "--default", "teapot"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad behavior spec `teapot`"));
    assert!(output.stdout.is_empty());
}

#[test]
fn a_receiver_records_any_request_and_answers_with_its_status() {
    let receiver = StandIn::start(StandInConfig {
        receiver_status: Some(204),
        ..StandInConfig::default()
    })
    .unwrap();
    let client = client();
    let sent = |path: &str| {
        client
            .post(format!("{}{path}", receiver.url()))
            .body(r#"{"text":"hello"}"#)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(sent("/hooks/abc"), StatusCode::NO_CONTENT);
    receiver.set_receiver_status(503);
    assert_eq!(sent("/ping/abc/fail"), StatusCode::SERVICE_UNAVAILABLE);
    let requests = receiver.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/hooks/abc", "/ping/abc/fail"]);
    assert_eq!(requests[0].body, br#"{"text":"hello"}"#);
}

/// A stand-in whose every answer takes `service` at one of its workers.
fn start_with_capacity(service: Duration, capacity: Capacity) -> StandIn {
    StandIn::start(StandInConfig {
        default_behavior: Behavior::Delay {
            delay: service,
            then: Box::new(Behavior::Synthetic),
        },
        capacity: Some(capacity),
        ..StandInConfig::default()
    })
    .unwrap()
}

#[test]
fn a_capacity_serves_its_queue_in_the_order_it_formed() {
    let stand_in = start_with_capacity(
        Duration::from_millis(300),
        Capacity {
            workers: 1,
            queue: 5,
            retry_after: None,
        },
    );
    let clients: Vec<Client> = (0..6).map(|_| client()).collect();
    let began = Instant::now();
    let mut answered: Vec<(Duration, u64)> = thread::scope(|scope| {
        let requests: Vec<_> = (0u64..)
            .zip(&clients)
            .map(|(order, client)| {
                let stand_in = &stand_in;
                scope.spawn(move || {
                    // Each sent once the one before it is at the endpoint, in its queue.
                    assert!(stand_in.wait_for_requests(order, PATIENCE));
                    let status = collect(client, stand_in, COMPANY).status();
                    assert_eq!(status, StatusCode::OK);
                    (began.elapsed(), order)
                })
            })
            .collect();
        requests.into_iter().map(|r| r.join().unwrap()).collect()
    });
    answered.sort();
    let order: Vec<u64> = answered.iter().map(|(_, order)| *order).collect();
    assert_eq!(order, [0, 1, 2, 3, 4, 5], "{answered:?}");
}

#[test]
fn a_capacity_serves_so_many_at_once_queues_a_few_and_refuses_the_rest() {
    let service = Duration::from_millis(300);
    let stand_in = start_with_capacity(
        service,
        Capacity {
            workers: 2,
            queue: 1,
            retry_after: Some("1".into()),
        },
    );
    let at_once = |count: usize| -> Vec<(StatusCode, Option<String>)> {
        thread::scope(|scope| {
            let requests: Vec<_> = (0..count)
                .map(|_| {
                    scope.spawn(|| {
                        let response = collect(&client(), &stand_in, COMPANY);
                        let retry_after = response
                            .headers()
                            .get("retry-after")
                            .map(|value| value.to_str().unwrap().to_string());
                        (response.status(), retry_after)
                    })
                })
                .collect();
            requests.into_iter().map(|r| r.join().unwrap()).collect()
        })
    };
    let answers = at_once(4);
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(refused.len(), 1, "{answers:?}");
    assert_eq!(refused[0].1.as_deref(), Some("1"));
    let report = stand_in.capacity_report();
    assert_eq!(report.refused, 1);
    assert_eq!(report.served.len(), 3);
    // Two served at once; the third waited for one of them (from a moment after they came).
    let waited = report
        .served
        .iter()
        .filter(|t| **t >= service * 3 / 2)
        .count();
    assert_eq!(waited, 1, "{:?}", report.served);

    stand_in.reset();
    stand_in.set_capacity_workers(4);
    let answers = at_once(4);
    assert!(
        answers.iter().all(|(status, _)| *status == StatusCode::OK),
        "{answers:?}"
    );
    let report = stand_in.capacity_report();
    assert_eq!((report.refused, report.served.len()), (0, 4));
    assert!(
        report.served.iter().all(|t| *t < service * 2),
        "{:?}",
        report.served
    );
}
