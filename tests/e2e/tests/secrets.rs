//! The service key stays secret however it is configured: it comes from Supabase Vault or from a
//! private file, never from a setting; an unusable file is one clear error before any request;
//! the retired setting is refused, and a leftover value is named but never shown; and no other
//! role, nor the server log at debug5 across runs, reloads and a restart, ever holds the key.

use std::os::unix::fs::PermissionsExt;

use dex_collector_e2e::deployment::{server_major, sql_error, Deployment, DeploymentOptions};
use dex_collector_e2e::stand_in::StandInConfig;
use serde_json::Value;

const KEY: &str = "sk-live-SECRETKEY-4b1d9e2c7a";
const LEFTOVER: &str = "sk-old-LEFTOVERKEY-93f0";

fn deployment(preload: bool) -> Deployment {
    Deployment::start(DeploymentOptions {
        preload,
        stand_in: StandInConfig {
            service_key: KEY.into(),
            ..StandInConfig::default()
        },
        settings: vec![("log_min_messages".into(), "debug5".into())],
        ..DeploymentOptions::default()
    })
    .unwrap()
}

/// The SQLSTATE, message and hint (empty when none) of a statement that must fail.
fn error_of(result: Result<impl std::fmt::Debug, postgres::Error>) -> (String, String, String) {
    let (code, message, hint) = sql_error(result);
    (code, message, hint.unwrap_or_default())
}

fn sent_keys(deployment: &Deployment) -> Vec<String> {
    deployment
        .stand_in
        .requests()
        .iter()
        .map(|r| r.header("x-service-key").unwrap_or_default().to_string())
        .collect()
}

#[test]
fn the_key_file_is_read_at_every_run_and_an_unusable_one_sends_nothing() {
    let deployment = deployment(false);
    let summary = deployment.collect_all();
    assert_eq!(summary["successfulCollections"], 8, "{summary}");
    assert!(sent_keys(&deployment).iter().all(|key| key == KEY));

    // A rotated key is used by the next run, without a reload. One company at a time: the 401
    // stops the run before another request is sent (with more at once, the stand-in of a busy
    // machine could still be reading the ones the stop dropped when the cases below begin).
    deployment.stand_in.reset();
    std::fs::write(&deployment.key_file, "sk-rotated-key\r\n").unwrap();
    let mut one_at_a_time = deployment.client();
    one_at_a_time
        .batch_execute("SET dex_collector.concurrency = 1")
        .unwrap();
    let summary: Value = one_at_a_time
        .query_one("SELECT dex_collect_all()", &[])
        .unwrap()
        .get(0);
    assert_eq!(summary["error"], "service key rejected by the endpoint");
    assert_eq!(sent_keys(&deployment), ["sk-rotated-key"]);
    std::fs::write(&deployment.key_file, format!("{KEY}\n")).unwrap();

    let cluster = &deployment.cluster;
    let open = cluster
        .write_private_file("open_key", format!("{KEY}\n").as_bytes())
        .unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let directory = cluster.root_dir().join("key_directory");
    std::fs::create_dir(&directory).unwrap();
    std::fs::set_permissions(&directory, std::fs::Permissions::from_mode(0o700)).unwrap();
    cluster.hand_over(&directory).unwrap();
    let empty = cluster.write_private_file("empty_key", b"").unwrap();
    let line_end_only = cluster.write_private_file("line_end_key", b"\n").unwrap();
    let missing = cluster.root_dir().join("no_such_key");
    let cases = [
        (
            &open,
            "its mode is 0644: group or others may access it (use chmod 0600)",
        ),
        (&missing, "it does not exist"),
        (&directory, "it is not a regular file"),
        (&empty, "it is empty"),
        (&line_end_only, "it is empty"),
    ];
    deployment.stand_in.reset();
    for (path, reason) in cases {
        let mut client = deployment.client();
        client
            .batch_execute(&format!(
                "SET dex_collector.service_key_file = '{}'",
                path.display()
            ))
            .unwrap();
        let (code, message, hint) = error_of(client.query_one("SELECT dex_collect_all()", &[]));
        assert_eq!(code, "22023", "{message}");
        assert_eq!(
            message,
            format!(
                "unusable dex_collector.service_key_file \"{}\": {reason}",
                path.display()
            )
        );
        assert!(hint.contains("mode 0600"), "{hint}");
        assert!(!message.contains(KEY) && !hint.contains(KEY));
    }
    assert_eq!(
        deployment.stand_in.request_count(),
        0,
        "no request with an unusable key"
    );
    assert!(!deployment.cluster.log_contents().contains(KEY));
}

#[test]
fn a_vault_secret_comes_before_the_file() {
    let deployment = deployment(false);
    std::fs::write(&deployment.key_file, "sk-from-the-file\n").unwrap();
    deployment
        .client()
        .batch_execute(&format!(
            "CREATE SCHEMA vault;
             CREATE TABLE vault.secrets (name text, secret text);
             INSERT INTO vault.secrets VALUES ('dex_collector_service_key', '{KEY}');
             CREATE VIEW vault.decrypted_secrets AS SELECT name, secret AS decrypted_secret FROM vault.secrets;"
        ))
        .unwrap();
    let summary = deployment.collect_all();
    assert_eq!(summary["successfulCollections"], 8, "{summary}");
    assert!(sent_keys(&deployment).iter().all(|key| key == KEY));
}

#[test]
fn the_retired_setting_is_refused_and_a_leftover_is_named_but_never_shown() {
    let deployment =
        deployment(false).expect_warnings(&["dex_collector.service_key is no longer read"]);
    // A session that has not loaded the library stores any placeholder, as 0.1.0's users did.
    let mut fresh = deployment.client();
    let loaded: i64 = fresh
        .query_one(
            "SELECT count(*) FROM pg_settings WHERE name = 'dex_collector.concurrency'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(loaded, 0, "the session has not loaded the library");
    fresh
        .batch_execute(&format!(
            "ALTER DATABASE dex SET dex_collector.service_key = '{LEFTOVER}';
             ALTER DATABASE dex RESET dex_collector.service_key_file;"
        ))
        .unwrap();

    let mut client = deployment.client();
    let (code, message, hint) = error_of(client.query_one("SELECT dex_collect_all()", &[]));
    assert_eq!(code, "22023");
    assert!(
        message.ends_with(
            "dex_collector.service_key is still set (ALTER DATABASE dex SET) but no longer read: \
             any role can read a setting, and the server logs its new value on reload"
        ),
        "{message}"
    );
    assert!(hint.contains("RESET dex_collector.service_key"), "{hint}");
    assert!(!message.contains(LEFTOVER) && !hint.contains(LEFTOVER));

    // Where the library is loaded, the old name takes no value, and other names are no names.
    let (code, message, hint) = error_of(
        client.batch_execute("ALTER DATABASE dex SET dex_collector.service_key = 'sk-new-value'"),
    );
    assert_eq!(code, "22023");
    assert!(
        message.starts_with("dex_collector.service_key is no longer read"),
        "{message}"
    );
    assert!(
        hint.contains("dex_collector_service_key")
            && hint.contains("dex_collector.service_key_file"),
        "{hint}"
    );
    assert!(!message.contains("sk-new-value") && !hint.contains("sk-new-value"));
    let (code, _, _) = error_of(
        client.batch_execute("ALTER SYSTEM SET dex_collector.service_key = 'sk-new-value'"),
    );
    assert_eq!(code, "22023");
    let (code, _, _) =
        error_of(client.batch_execute("ALTER DATABASE dex SET dex_collector.servicekey = 'x'"));
    assert_eq!(code, "42602", "the prefix is reserved");

    // The fix the hint gives.
    client
        .batch_execute(&format!(
            "ALTER DATABASE dex RESET dex_collector.service_key;
             ALTER DATABASE dex SET dex_collector.service_key_file = '{}';",
            deployment.key_file.display()
        ))
        .unwrap();
    let summary = deployment.collect_all();
    assert_eq!(summary["successfulCollections"], 8, "{summary}");
    // PostgreSQL logs the text of a failing statement (log_min_error_statement), so the value
    // typed into a refused ALTER is there as typed, and nowhere else (as docs/configuration.md
    // says).
    let log = deployment.cluster.log_contents();
    let leaks: Vec<&str> = log
        .lines()
        .filter(|line| {
            [LEFTOVER, "sk-new-value", KEY]
                .iter()
                .any(|s| line.contains(s))
        })
        .filter(|line| !line.contains("STATEMENT:  ALTER"))
        .collect();
    assert!(leaks.is_empty(), "the server log holds a key: {leaks:#?}");
}

/// `ALTER SYSTEM SET dex_collector.service_key` in a session that has not loaded the library,
/// as 0.1.0's README had it: PostgreSQL 15 and 16 refuse the unknown name; 17 stores it in
/// `postgresql.auto.conf`, where a collection finds it, names the file and line (never the
/// value) and refuses to run until it is reset. PostgreSQL itself logs the value on reload, as it
/// logs any setting's new value (docs/operations.md); dex_collector never repeats it.
#[test]
fn the_retired_setting_stored_by_alter_system_is_named_until_it_is_reset() {
    let deployment =
        deployment(false).expect_warnings(&["dex_collector.service_key is no longer read"]);
    let mut client = deployment.client();
    let major = server_major(&mut client);
    let stored = client.batch_execute(&format!(
        "ALTER SYSTEM SET dex_collector.service_key = '{LEFTOVER}'"
    ));
    if major < 17 {
        let (code, message, _) = error_of(stored);
        assert_eq!(code, "42704", "{message}");
        assert!(!message.contains(LEFTOVER), "{message}");
        return;
    }
    stored.unwrap();
    // A 0.1.0 deployment: the setting was its only key.
    client
        .batch_execute("ALTER DATABASE dex RESET dex_collector.service_key_file")
        .unwrap();
    client.batch_execute("SELECT pg_reload_conf()").unwrap();

    let (code, message, hint) = error_of(
        deployment
            .client()
            .query_one("SELECT dex_collect_all()", &[]),
    );
    assert_eq!(code, "22023");
    assert!(
        message.contains("dex_collector.service_key is still set (")
            && message.contains("postgresql.auto.conf line"),
        "{message}"
    );
    assert!(hint.contains("RESET dex_collector.service_key"), "{hint}");
    assert!(!message.contains(LEFTOVER) && !hint.contains(LEFTOVER));

    client
        .batch_execute("ALTER SYSTEM RESET dex_collector.service_key")
        .unwrap();
    client.batch_execute("SELECT pg_reload_conf()").unwrap();
    client.batch_execute(&deployment.configure_sql()).unwrap();
    let summary = deployment.collect_all();
    assert_eq!(summary["successfulCollections"], 8, "{summary}");
    let log = deployment.cluster.log_contents();
    let leaks: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(LEFTOVER))
        .filter(|line| {
            !line.contains("STATEMENT:  ALTER SYSTEM")
                && !line.contains("statement: ALTER SYSTEM")
                && !line.contains("parameter \"dex_collector.service_key\" changed to")
        })
        .collect();
    assert!(leaks.is_empty(), "the server log holds the key: {leaks:#?}");
    // What docs/operations.md warns of: PostgreSQL's own line, at the reload.
    assert!(log.contains(&format!(
        "parameter \"dex_collector.service_key\" changed to \"{LEFTOVER}\""
    )));
}

/// Every place a role without grants can look, as text: settings, per-database and per-role
/// settings, every `dex_collector.*` value, and every table and view it may read.
fn everything_visible_to(client: &mut postgres::Client) -> String {
    let mut seen = String::new();
    for row in client.query("SHOW ALL", &[]).unwrap() {
        seen.push_str(&format!(
            "{:?} {:?}\n",
            row.get::<_, String>(0),
            row.get::<_, String>(1)
        ));
    }
    let names: Vec<String> = client
        .query(
            "SELECT name FROM pg_settings WHERE name LIKE 'dex_collector.%'
             UNION SELECT unnest(ARRAY['dex_collector.service_key', 'dex_collector.service_key_file'])",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    for name in names {
        if let Ok(row) = client.query_one("SELECT current_setting($1, true)", &[&name]) {
            seen.push_str(&format!("{name} = {:?}\n", row.get::<_, Option<String>>(0)));
        }
    }
    let relations: Vec<String> = client
        .query(
            "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables
              WHERE has_table_privilege(format('%I.%I', table_schema, table_name), 'SELECT')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(relations
        .iter()
        .any(|r| r == "pg_catalog.pg_db_role_setting"));
    for relation in relations {
        if let Ok(rows) = client.query(&format!("SELECT t::text FROM {relation} AS t"), &[]) {
            for row in rows {
                seen.push_str(&row.get::<_, Option<String>>(0).unwrap_or_default());
                seen.push('\n');
            }
        }
    }
    seen
}

fn no_other_role_nor_the_log_ever_holds_the_key(preload: bool) {
    let deployment = deployment(preload);
    assert_eq!(deployment.collect_all()["successfulCollections"], 8);
    let mut admin = deployment.client();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    deployment.cluster.restart("fast").unwrap();
    assert_eq!(deployment.collect_all()["successfulCollections"], 8);
    deployment
        .client()
        .batch_execute("CREATE ROLE snoop LOGIN")
        .unwrap();

    let mut snoop = deployment.cluster.connect_as("snoop", "dex").unwrap();
    let loaded: i64 = snoop
        .query_one(
            "SELECT count(*) FROM pg_settings WHERE name = 'dex_collector.concurrency'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        loaded,
        i64::from(preload),
        "library loaded in the role's session: {preload}"
    );
    let seen = everything_visible_to(&mut snoop);
    assert!(
        seen.contains("dex_collector"),
        "the search saw the settings"
    );
    assert!(!seen.contains(KEY), "a plain role found the key");

    let log = deployment.cluster.log_contents();
    assert!(log.contains("DEBUG"), "the server logged at debug5");
    assert!(!log.contains(KEY), "the server log holds the key");
}

#[test]
fn no_other_role_nor_the_log_holds_the_key_without_the_library_preloaded() {
    no_other_role_nor_the_log_ever_holds_the_key(false);
}

#[test]
fn no_other_role_nor_the_log_holds_the_key_with_the_library_preloaded() {
    no_other_role_nor_the_log_ever_holds_the_key(true);
}

#[test]
fn results_and_history_never_hold_the_key() {
    let deployment = deployment(false);
    let summary: Value = deployment.collect_all();
    assert!(!summary.to_string().contains(KEY));
    let history: String = deployment
        .client()
        .query_one(
            "SELECT (SELECT string_agg(r::text, ' ') FROM dex_collector.runs r)
                 || (SELECT string_agg(rr::text, ' ') FROM dex_collector.run_results rr)",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!history.contains(KEY));
}
