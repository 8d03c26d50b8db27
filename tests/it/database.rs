//! `[database]` on PostgreSQL from a sysadmin's side: `check-config --connect` before and
//! after the tables exist and with a wrong password (which it never prints), TLS checked
//! against the CA, and a database whose locale cannot match names in any case refused
//! at the first start with the command that makes a good one.

use crate::harness::{Backend, Dir};
use crate::postgres::PASSWORD;

#[test]
fn check_config_connects_to_postgresql_and_says_what_is_wrong() {
    let dir = Dir::on(Backend::Postgres, "");
    let (server, name) = dir.postgres.as_ref().expect("a PostgreSQL dir");
    let url = server.url(name);

    let before = dir.run(&["check-config", "--connect"]);
    before.assert_code(1);
    assert!(
        before.stdout.contains(&format!("database {url}: FAILED: connected, but it has no postdesk tables yet")),
        "{}",
        before.stdout
    );
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'tickets'"),
        0,
        "check-config created tables"
    );

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    dir.run(&["ingest", &empty.display().to_string()]).assert_code(0);
    let after = dir.run(&["check-config", "--connect"]);
    after.assert_code(0);
    assert!(after.stdout.contains(&format!("database {url}: OK")), "{}", after.stdout);

    let wrong_file = dir.path().join("wrong-password");
    std::fs::write(&wrong_file, "not-the-password").unwrap();
    let config = std::fs::read_to_string(dir.config()).unwrap();
    let config: String = config
        .lines()
        .map(|l| match l.starts_with("password_file") {
            true => format!("password_file = \"{}\"\n", wrong_file.display()),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write(dir.config(), config).unwrap();
    let wrong = dir.run(&["check-config", "--connect"]);
    wrong.assert_code(1);
    assert!(wrong.stdout.contains("FAILED") && wrong.stdout.contains("password"), "{}", wrong.stdout);
    for shown in [&wrong.stdout, &wrong.stderr] {
        assert!(!shown.contains("not-the-password") && !shown.contains(PASSWORD), "a password shown: {shown}");
    }
}

#[test]
fn tls_to_postgresql_is_verified_against_the_configured_ca() {
    let dir = Dir::on(Backend::Postgres, "");
    let config = std::fs::read_to_string(dir.config()).unwrap();
    // Another CA than the server's: the connection is refused, nothing is created.
    let other = config.replace("certs/ca.pem", "certs/other-ca.pem");
    std::fs::write(dir.config(), other).unwrap();
    let run = dir.run(&["ingest", "-"]);
    assert_eq!(run.code, 75, "{}", run.stderr);
    assert!(run.stderr.to_lowercase().contains("certificate"), "{}", run.stderr);
    assert_eq!(dir.count("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'tickets'"), 0);
}

#[test]
fn a_database_that_cannot_match_names_in_any_case_is_refused() {
    let dir = Dir::on(Backend::Postgres, "");
    let (server, name) = dir.postgres.as_ref().expect("a PostgreSQL dir");
    server.sql("postgres", "CREATE DATABASE ascii_only LOCALE 'C' TEMPLATE template0");
    let config = std::fs::read_to_string(dir.config()).unwrap();
    std::fs::write(dir.config(), config.replace(&server.url(name), &server.url("ascii_only"))).unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let run = dir.run(&["ingest", &empty.display().to_string()]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("character type C") && run.stderr.contains("createdb --encoding UTF8"),
        "{}",
        run.stderr
    );
    assert_eq!(server.sql("ascii_only", "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'tickets'"), "0");
}
