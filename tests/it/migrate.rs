//! `postdesk migrate-db`: a SQLite helpdesk copied into a private PostgreSQL reads the
//! same through every command, goes on from there, and a second copy is refused.

use crate::harness::{repo_path, Backend, Dir};

/// The list commands whose output must be the same on both databases.
const VIEWS: &[&[&str]] = &[
    &["tickets", "list"],
    &["customers", "list"],
    &["orgs", "list"],
    &["outbox", "list"],
    &["failed", "list"],
    &["agents", "list"],
];

#[test]
fn a_sqlite_helpdesk_moves_to_postgresql_with_its_history() {
    let sqlite = Dir::with_database("");
    sqlite.run(&["ingest", &repo_path("fixtures/mail").display().to_string()]).assert_code(0);
    sqlite.run(&["orgs", "add", "Walsh", "--domain", "walsh.example"]).assert_code(0);
    let agent = ["agents", "add", "al@helpdesk.example", "--name", "Al", "--role", "agent"];
    sqlite.run_with_stdin(&agent, Some(b"a long password\n")).assert_code(0);
    let postgres = Dir::on(Backend::Postgres, "");
    let (server, name) = postgres.postgres.as_ref().expect("a PostgreSQL dir");
    let url = server.url(name);
    let from = format!("sqlite:{}", sqlite.path().join("postdesk.db").display());

    let run = postgres.run(&["migrate-db", "--from", &from, "--to", &url]);
    run.assert_code(0);
    assert!(run.stdout.contains("every table has as many rows in both"), "{}", run.stdout);
    for view in VIEWS {
        assert_eq!(sqlite.json(view), postgres.json(view), "{view:?}");
    }
    let tickets = sqlite.count("SELECT COUNT(*) FROM tickets");
    assert!(tickets > 10, "the fixtures made {tickets} tickets");
    assert_eq!(postgres.count("SELECT COUNT(*) FROM raw_messages"), sqlite.count("SELECT COUNT(*) FROM raw_messages"));

    // The copy goes on: new ids and ticket numbers follow the copied ones.
    let new = "From: Nina <nina@newco.example>\nTo: support@helpdesk.example\nSubject: after the move\n\
               Message-ID: <after-move@newco.example>\n\nHello.\n";
    let run = postgres.run_with_stdin(&["ingest", "-"], Some(new.as_bytes()));
    run.assert_code(0);
    assert!(run.stdout.contains("new ticket"), "{}", run.stdout);
    assert_eq!(postgres.count("SELECT COUNT(*) FROM tickets"), tickets + 1);

    let again = postgres.run(&["migrate-db", "--from", &from, "--to", &url]);
    again.assert_code(64);
    assert!(again.stderr.contains("not empty"), "{}", again.stderr);
    assert_eq!(postgres.count("SELECT COUNT(*) FROM tickets"), tickets + 1, "nothing written by the refused copy");
}
