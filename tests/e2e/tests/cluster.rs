//! Throwaway clusters with plain PostgreSQL (no extension needed).

use dex_collector_e2e::cluster::{ClusterError, ClusterOptions, TestCluster};

fn start_default() -> TestCluster {
    TestCluster::start(ClusterOptions::default()).unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn starts_with_the_requested_database_and_settings() {
    let cluster = TestCluster::start(ClusterOptions {
        settings: vec![
            ("work_mem".to_owned(), "8MB".to_owned()),
            ("application_name".to_owned(), "it's quoted".to_owned()),
        ],
        database: "collector test".to_owned(),
        ..ClusterOptions::default()
    })
    .unwrap_or_else(|error| panic!("{error}"));

    let mut client = cluster.connect().unwrap();
    assert_eq!(
        client.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0),
        1
    );
    let row = client
        .query_one(
            "SELECT current_database(), current_user, current_setting('work_mem'),
                    current_setting('fsync'), current_setting('listen_addresses'),
                    current_setting('port')::int, current_setting('application_name')",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "collector test");
    assert_eq!(row.get::<_, String>(1), "postgres");
    assert_eq!(row.get::<_, String>(2), "8MB");
    assert_eq!(row.get::<_, String>(3), "off");
    assert_eq!(row.get::<_, String>(4), "127.0.0.1");
    assert_eq!(row.get::<_, i32>(5), i32::from(cluster.port()));
    // The connection's own application_name wins over the server default, so ask the server.
    let default = client
        .query_one(
            "SELECT reset_val FROM pg_settings WHERE name = 'application_name'",
            &[],
        )
        .unwrap();
    assert_eq!(default.get::<_, String>(0), "it's quoted");
    assert!(cluster
        .connection_string("postgres")
        .contains(&format!("port={}", cluster.port())));
}

#[test]
fn connects_as_another_role() {
    let cluster = start_default();
    cluster
        .connect()
        .unwrap()
        .batch_execute("CREATE ROLE collector LOGIN; CREATE ROLE no_login NOLOGIN")
        .unwrap();

    let mut collector = cluster.connect_as("collector", "dex").unwrap();
    let user: String = collector
        .query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(user, "collector");

    let error = cluster.connect_as("no_login", "dex").err().unwrap();
    assert!(matches!(error, ClusterError::Sql { .. }));
    assert!(
        error.to_string().contains("not permitted to log in"),
        "{error}"
    );
}

#[test]
fn psql_output_and_errors() {
    let cluster = start_default();
    let output = cluster
        .psql("CREATE TABLE t (id int, name text);\nINSERT INTO t VALUES (1, 'acme');\nSELECT * FROM t;")
        .unwrap();
    assert!(output.contains("CREATE TABLE"), "{output}");
    assert!(output.contains(" id | name"), "{output}");
    assert!(output.contains("(1 row)"), "{output}");

    let error = cluster
        .psql("SELECT 1/0;\nSELECT 'not reached';")
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("division by zero"), "{message}");
    assert!(
        !message.contains("not reached"),
        "ON_ERROR_STOP stops at the first error"
    );
}

#[test]
fn restart_keeps_data_and_the_log_tells() {
    let cluster = start_default();
    cluster
        .connect()
        .unwrap()
        .batch_execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        .unwrap();
    let port = cluster.port();

    cluster.restart("fast").unwrap();

    assert_eq!(cluster.port(), port);
    let mut client = cluster.connect().unwrap();
    assert_eq!(
        client
            .query_one("SELECT x FROM kept", &[])
            .unwrap()
            .get::<_, i32>(0),
        42
    );
    let log = cluster.log_contents();
    assert!(log.contains("received fast shutdown request"), "{log}");
    assert_eq!(
        log.matches("database system is ready to accept connections")
            .count(),
        2,
        "{log}"
    );
}

#[test]
fn two_clusters_run_side_by_side_and_clean_up() {
    let first = start_default();
    let second = start_default();
    assert_ne!(first.port(), second.port());
    assert_ne!(first.data_dir(), second.data_dir());

    first
        .connect()
        .unwrap()
        .batch_execute("CREATE TABLE only_in_first ()")
        .unwrap();
    let has_first_table = |cluster: &TestCluster| -> bool {
        cluster
            .connect()
            .unwrap()
            .query_one("SELECT to_regclass('only_in_first') IS NOT NULL", &[])
            .unwrap()
            .get(0)
    };
    assert!(has_first_table(&first));
    assert!(!has_first_table(&second));

    let first_dir = first.data_dir().to_owned();
    let first_port = first.port();
    first.stop();
    assert!(!first_dir.exists());
    assert!(std::net::TcpStream::connect(("127.0.0.1", first_port)).is_err());
    assert!(
        !has_first_table(&second),
        "the second cluster still answers"
    );
}

#[test]
fn a_server_that_cannot_start_reports_its_log() {
    let error = TestCluster::start(ClusterOptions {
        shared_preload_libraries: vec!["no_such_library".to_owned()],
        ..ClusterOptions::default()
    })
    .err()
    .unwrap();
    let message = error.to_string();
    assert!(matches!(error, ClusterError::Command { .. }), "{message}");
    assert!(message.contains("pg_ctl"), "{message}");
    assert!(
        message.contains("no_such_library"),
        "the log tail is quoted: {message}"
    );
}
