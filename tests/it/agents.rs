//! `postdesk agents` against the real binary: the password comes on standard input, never
//! as an argument, and is never shown again; short passwords and taken addresses are
//! refused with messages that say so.

use serde_json::Value;

use crate::harness::Dir;

const ADMIN: &str = "ada@helpdesk.example";

fn add(dir: &Dir, email: &str, password: &str) -> crate::harness::Run {
    let stdin = format!("{password}\n");
    dir.run_with_stdin(&["agents", "add", email, "--name", "Ada Admin", "--role", "admin"], Some(stdin.as_bytes()))
}

#[test]
fn agents_are_added_listed_without_their_hash_and_disabled() {
    let dir = Dir::new("");
    let added = add(&dir, " Ada@Helpdesk.example", "correct horse battery");
    added.assert_code(0);
    assert!(added.stdout.contains("added agent ada@helpdesk.example (Ada Admin, admin)"), "{}", added.stdout);

    let list = dir.run(&["agents", "list"]);
    list.assert_code(0);
    let rows = list.lines_with(ADMIN);
    assert_eq!(rows.len(), 1, "{}", list.stdout);
    assert!(rows[0].contains("admin") && rows[0].contains("active"), "{}", list.stdout);
    let json = dir.json(&["agents", "list"]);
    let agents = json.as_array().expect("a list");
    assert_eq!(agents.len(), 1, "{json}");
    assert_eq!(agents[0]["email"], ADMIN);
    assert_eq!(agents[0]["role"], "admin");
    assert_eq!(agents[0]["disabled"], Value::Bool(false));
    for shown in [&list.stdout, &json.to_string()] {
        assert!(!shown.contains("argon2") && !shown.contains("correct horse"), "a password shown:\n{shown}");
    }

    let disabled = dir.run(&["agents", "disable", ADMIN]);
    disabled.assert_code(0);
    assert!(disabled.stdout.contains("disabled ada@helpdesk.example"), "{}", disabled.stdout);
    let json = dir.json(&["agents", "list"]);
    assert_eq!(json[0]["disabled"], Value::Bool(true), "{json}");
    assert!(dir.run(&["agents", "list"]).lines_with(ADMIN)[0].contains("disabled"));

    let passwd = dir.run_with_stdin(&["agents", "passwd", ADMIN], Some(b"another long password\n"));
    passwd.assert_code(0);
    assert!(passwd.stdout.contains("password of ada@helpdesk.example changed"), "{}", passwd.stdout);
}

#[test]
fn short_passwords_taken_addresses_and_missing_passwords_are_refused() {
    let dir = Dir::new("");
    let short = add(&dir, ADMIN, "too short");
    assert_ne!(short.code, 0, "{}", short.stdout);
    assert!(short.stderr.contains("a password needs at least 10 characters"), "{}", short.stderr);

    add(&dir, ADMIN, "correct horse battery").assert_code(0);
    let again = add(&dir, "ADA@helpdesk.example", "another long password");
    assert_ne!(again.code, 0, "{}", again.stdout);
    assert!(again.stderr.contains("ada@helpdesk.example is already an agent"), "{}", again.stderr);

    let nothing = dir.run_with_stdin(&["agents", "passwd", ADMIN], Some(b""));
    nothing.assert_code(64);
    assert!(nothing.stderr.contains("no password on standard input"), "{}", nothing.stderr);

    let unknown = dir.run_with_stdin(&["agents", "disable", "bob@helpdesk.example"], None);
    assert_ne!(unknown.code, 0, "{}", unknown.stdout);
    assert!(unknown.stderr.contains("bob@helpdesk.example"), "{}", unknown.stderr);

    let role = dir.run_with_stdin(
        &["agents", "add", "bob@helpdesk.example", "--name", "Bob", "--role", "boss"],
        Some(b"a good long password\n"),
    );
    role.assert_code(64);

    let unnamed = dir.run_with_stdin(
        &["agents", "add", "bob@helpdesk.example", "--name", " ", "--role", "agent"],
        Some(b"a good long password\n"),
    );
    assert_ne!(unnamed.code, 0, "{}", unnamed.stdout);
    assert!(unnamed.stderr.contains("an agent needs a name"), "{}", unnamed.stderr);

    assert_eq!(dir.json(&["agents", "list"]).as_array().map(Vec::len), Some(1));
}
