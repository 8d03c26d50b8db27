//! The real `postdesk` binary: ingest, duplicates, routing, exit statuses, read commands.

use std::path::Path;

use serde_json::Value;

use crate::harness::{postdesk, repo_path, run_command, ticket_in, Dir};

fn fixture(name: &str) -> String {
    repo_path(&format!("fixtures/mail/{name}")).display().to_string()
}

fn tickets(dir: &Dir) -> Vec<Value> {
    dir.json(&["tickets", "list"]).as_array().expect("a JSON array").clone()
}

#[test]
fn ingest_prints_one_line_per_message_and_tickets_list_shows_them() {
    let dir = Dir::new("[ingest]\nmax_message_bytes = 32768\n");
    let run = dir.run(&["ingest", &repo_path("fixtures/mail").display().to_string()]);
    run.assert_code(0);
    let messages = std::fs::read_dir(repo_path("fixtures/mail"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "eml"))
        .count();
    assert_eq!(run.stdout.lines().count(), messages, "{}", run.stdout);
    let first = ticket_in(run.lines_with("01-plain-text.eml")[0]);
    assert_eq!(
        run.lines_with("06-reply-in-reply-to.eml")[0].split(": ").nth(1),
        Some(&*format!("follow-up to ticket {first}"))
    );
    assert!(
        run.lines_with("15-oversized.eml")[0].contains("failed, kept as failed message #1: message is"),
        "{}",
        run.stdout
    );
    assert!(run.lines_with("08-auto-reply.eml")[0].ends_with("no acknowledgement (auto-reply)"));

    let all = tickets(&dir);
    let printer = all.iter().find(|t| t["number"] == first.as_str()).expect("ticket of 01");
    for key in ["number", "subject", "state", "customer_email", "organisation", "created_at", "articles", "ack"] {
        assert!(printer.get(key).is_some(), "ticket JSON lacks {key}: {printer}");
    }
    assert_eq!(printer["customer_email"], "alice.martin@acme-widgets.com");
    assert_eq!(printer["organisation"], "acme-widgets.com");
    assert_eq!(printer["ack"], "queued");
    assert!(printer["articles"].as_i64().unwrap() >= 2, "{printer}");
    let erin = all.iter().find(|t| t["customer_email"] == "erin.walsh@gmail.com").expect("free-mail ticket");
    assert_eq!(erin["organisation"], Value::Null);

    let failed = dir.json(&["failed", "list"]);
    let failed = failed.as_array().unwrap();
    assert_eq!(failed.len(), run.lines_with("failed, kept as failed message").len(), "{failed:?}");
    assert!(failed.iter().any(|f| f["reason"].as_str().unwrap().contains("over the limit of 32768")), "{failed:?}");

    let text = dir.run(&["tickets", "list"]);
    text.assert_code(0);
    assert!(text.stdout.starts_with("NUMBER "), "{}", text.stdout);
    assert_eq!(text.stdout.lines().count(), all.len() + 1);
}

#[test]
fn the_same_message_twice_makes_one_ticket() {
    let dir = Dir::new("");
    let first = dir.run(&["ingest", &fixture("01-plain-text.eml")]);
    first.assert_code(0);
    let again = dir.run(&["ingest", &fixture("01-plain-text.eml")]);
    again.assert_code(0);
    assert!(
        again.stdout.contains("duplicate of ticket") && again.stdout.contains("already processed"),
        "{}",
        again.stdout
    );

    // The same Message-ID delivered through another path (an extra header) is one ticket too.
    let raw = std::fs::read(fixture("01-plain-text.eml")).unwrap();
    let mut other = b"Delivered-To: helpdesk@helpdesk.example\n".to_vec();
    other.extend_from_slice(&raw);
    let copy = dir.run_with_stdin(&["ingest", "-"], Some(&other));
    copy.assert_code(0);
    assert!(
        copy.stdout.starts_with("stdin: duplicate of ticket") && copy.stdout.contains("same Message-ID"),
        "{}",
        copy.stdout
    );
    assert_eq!(tickets(&dir).len(), 1);
}

#[test]
fn a_subject_tag_routes_a_follow_up_and_a_mistyped_one_does_not() {
    let dir = Dir::new("");
    let number = ticket_in(dir.run(&["ingest", &fixture("01-plain-text.eml")]).assert_code(0).stdout.trim());
    let reply = |n: &str, id: &str| {
        format!("From: Alice <alice.martin@acme-widgets.com>\nSubject: Re: [Ticket#{n}] printer\nMessage-ID: <{id}@x>\n\nStill jammed.\n")
    };
    let follow = dir.run_with_stdin(&["ingest", "-"], Some(reply(&number, "r1").as_bytes()));
    assert_eq!(follow.assert_code(0).stdout.trim(), format!("stdin: follow-up to ticket {number}"));

    let mut typo = number.clone().into_bytes();
    typo[10] = if typo[10] == b'9' { b'8' } else { typo[10] + 1 };
    let typo = String::from_utf8(typo).unwrap();
    let fresh = dir.run_with_stdin(&["ingest", "-"], Some(reply(&typo, "r2").as_bytes()));
    assert!(fresh.assert_code(0).stdout.contains("new ticket"), "a mistyped tag must not route: {}", fresh.stdout);

    let shown = dir.json(&["tickets", "show", &number]);
    assert_eq!(shown["articles"], 2);
    assert_eq!(shown["article_list"][1]["body"].as_str().unwrap().trim(), "Still jammed.");
}

#[test]
fn ticket_show_lists_articles_and_safe_attachment_names() {
    let dir = Dir::new("");
    let run = dir.run(&["ingest", &fixture("03-multipart-attachments.eml")]);
    let number = ticket_in(run.assert_code(0).stdout.trim());
    let shown = dir.json(&["tickets", "show", &number]);
    let names: Vec<&str> = shown["article_list"][0]["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["filename"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["invoice 2026-11.pdf", "passwd.csv"]);
    let text = dir.run(&["tickets", "show", &number]);
    assert!(text.assert_code(0).stdout.contains("[attachment] passwd.csv"), "{}", text.stdout);
    let missing = dir.run(&["tickets", "show", "2020010110000016"]);
    missing.assert_code(1);
    assert_eq!(missing.stderr.trim(), "postdesk: no ticket 2020010110000016");
}

#[test]
fn a_missing_or_unwritable_database_exits_75_so_an_mta_retries() {
    let dir = Dir::new("");
    let message = b"From: a@acme.example\nSubject: x\n\nbody\n";
    // An MTA's pipe never creates a second helpdesk beside the real one.
    let missing = dir.run_with_stdin(&["ingest", "-"], Some(message));
    missing.assert_code(75);
    assert!(missing.stderr.starts_with("postdesk: no database at "), "{}", missing.stderr);
    assert!(!dir.path().join("postdesk.db").exists());

    let mut cmd = dir.command(&["ingest", "/dev/null"]);
    cmd.env("POSTDESK_DATABASE__PATH", "/nonexistent-postdesk-dir/postdesk.db");
    let run = run_command(cmd, None);
    run.assert_code(75);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("cannot open /nonexistent-postdesk-dir/postdesk.db"), "{}", run.stderr);

    // A database another process holds locked past the busy timeout: 75 as well.
    dir.run(&["ingest", &fixture("01-plain-text.eml")]).assert_code(0);
    let lock = rusqlite::Connection::open(dir.path().join("postdesk.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let locked = dir.run_with_stdin(&["ingest", "-"], Some(message));
    locked.assert_code(75);
    assert!(locked.stderr.contains("locked"), "{}", locked.stderr);
    lock.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn the_database_path_can_come_from_the_environment() {
    let dir = Dir::new("");
    let db = dir.path().join("elsewhere.db");
    let mut cmd = dir.command(&["ingest", &fixture("11-free-mail.eml")]);
    cmd.env("POSTDESK_DATABASE__PATH", &db);
    run_command(cmd, None).assert_code(0);
    assert!(db.exists(), "POSTDESK_DATABASE__PATH was not used");
    assert!(!dir.path().join("postdesk.db").exists());
}

#[test]
fn usage_errors_exit_64_and_other_errors_1_with_one_line() {
    let dir = Dir::new("");
    run_command(dir.command(&["ingest", &fixture("01-plain-text.eml")]), None).assert_code(0);
    let unknown_flag = dir.run(&["tickets", "list", "--colour"]);
    unknown_flag.assert_code(64);
    let bad_month = dir.run(&["customers", "list", "--added", "2026-13"]);
    bad_month.assert_code(64);
    assert_eq!(bad_month.stderr.trim(), "postdesk: \"2026-13\" is not a month: expected YYYY-MM, e.g. 2026-11");
    let help = dir.run(&["tickets", "--help"]);
    help.assert_code(0);

    let missing = dir.run(&["ingest", "/no/such/file.eml"]);
    missing.assert_code(1);
    assert!(missing.stderr.starts_with("postdesk: cannot read /no/such/file.eml"), "{}", missing.stderr);

    std::fs::write(dir.config(), "[database]\npath = 'x.db'\n[acknowledgment]\nenabled = false\n").unwrap();
    let bad = dir.run(&["check-config"]);
    bad.assert_code(1);
    assert_eq!(bad.stderr.trim(), "postdesk: acknowledgment: unknown key");

    std::fs::write(dir.config(), "[helpdesk]\naddress = 'not an address'\n[ingest]\nbatch_size = 0\n").unwrap();
    let invalid = dir.run(&["check-config"]);
    invalid.assert_code(1);
    assert!(
        invalid.stderr.contains("helpdesk.address: ") && invalid.stderr.contains("ingest.batch_size: "),
        "{}",
        invalid.stderr
    );
}

/// The example config is valid as shipped, its passwords read as systemd credentials:
/// from systemd's $CREDENTIALS_DIRECTORY, or from a shell with --credentials-dir.
#[test]
fn the_example_config_is_valid() {
    let dir = Dir::new("");
    let example = repo_path("config/postdesk.example.toml").display().to_string();
    let check = |extra: &[&str]| {
        let mut cmd = postdesk(&["--config", &example]);
        cmd.args(extra).arg("check-config").current_dir(dir.path());
        // The example's /var/lib/postdesk is the service's; here the scratch directory.
        cmd.env("POSTDESK_DATABASE__PATH", dir.path().join("postdesk.db")).env_remove("CREDENTIALS_DIRECTORY");
        cmd
    };
    let without = run_command(check(&[]), None);
    without.assert_code(1);
    assert!(
        without.stderr.contains("mailbox[0].password: credential \"imap\": no credentials directory"),
        "{}",
        without.stderr
    );
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("imap"), "imap-secret\n").unwrap();
    std::fs::write(credentials.join("smtp"), "smtp-secret\n").unwrap();
    let mut under_systemd = check(&[]);
    under_systemd.env("CREDENTIALS_DIRECTORY", &credentials);
    let run = run_command(under_systemd, None);
    assert!(run.assert_code(0).stdout.starts_with("configuration OK"), "{}", run.stdout);
    let from_a_shell = run_command(check(&["--credentials-dir", &credentials.display().to_string()]), None);
    assert!(from_a_shell.assert_code(0).stdout.starts_with("configuration OK"), "{}", from_a_shell.stdout);

    // Commands that only read tickets need no password at all.
    run_command(postdesk_in(dir.path(), &example, &["ingest", &fixture("01-plain-text.eml")]), None).assert_code(0);
    let listed = run_command(postdesk_in(dir.path(), &example, &["tickets", "list"]), None);
    assert_eq!(listed.assert_code(0).stdout.lines().count(), 2, "{}", listed.stdout);
}

/// `postdesk --config CONFIG ARGS` with the database in `dir` and no credentials.
fn postdesk_in(dir: &std::path::Path, config: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = postdesk(&["--config", config]);
    cmd.args(args).env("POSTDESK_DATABASE__PATH", dir.join("postdesk.db")).env_remove("CREDENTIALS_DIRECTORY");
    cmd
}

/// Every file of a corpus ends as tickets, follow-ups, duplicates or failed messages
/// (an mbox as one line per message), and no bounce or auto-reply in it is acknowledged.
/// The corpus is `fixtures/mail`, or the directory named by `CORPUS_DIR` (`.ci/run`
/// names the shared real-world corpus when it lies beside the repository).
#[test]
fn a_corpus_goes_through_cleanly() {
    let corpus =
        std::env::var_os("CORPUS_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| repo_path("fixtures/mail"));
    assert!(corpus.is_dir(), "CORPUS_DIR={} is not a directory", corpus.display());
    let dir = Dir::new("");
    let run = dir.run(&["ingest", &corpus.display().to_string()]);
    run.assert_code(0);
    let mut files = std::collections::BTreeSet::new();
    let mut stack = vec![corpus.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let entry = entry.unwrap();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            match entry.file_type().unwrap().is_dir() {
                true if !hidden => stack.push(entry.path()),
                false if !hidden => {
                    files.insert(entry.path().display().to_string());
                }
                _ => {}
            }
        }
    }
    assert!(!files.is_empty(), "no files in {}", corpus.display());
    // "path: outcome", or "path#N: outcome" for the N-th message of an mbox.
    let labelled = |line: &str| {
        let label = line.split(": ").next().unwrap_or("");
        match label.rsplit_once('#') {
            Some((path, n)) if n.bytes().all(|b| b.is_ascii_digit()) => path.to_owned(),
            _ => label.to_owned(),
        }
    };
    let seen: std::collections::BTreeSet<String> = run.stdout.lines().map(labelled).collect();
    let missing: Vec<&String> = files.difference(&seen).collect();
    assert!(missing.is_empty(), "files without a line: {missing:?}");
    // Beyond those, only the messages of Maildir++ folders (`.Folder/cur/…`).
    for extra in seen.difference(&files) {
        assert!(extra.contains("/.") && Path::new(extra).is_file(), "a line for what is not a message file: {extra}");
    }
    let known = [
        "new ticket",
        "follow-up to ticket",
        "duplicate",
        "failed, kept as failed message",
        "bounce of acknowledgement",
    ];
    for line in run.stdout.lines() {
        assert!(known.iter().any(|k| line.contains(k)), "unexpected outcome: {line}");
        let automated = line.contains("/sisimai/")
            || line.contains("/messages/bounce/")
            || line.contains("auto-reply")
            || line.contains("dsn-bounce");
        assert!(!(automated && line.contains("acknowledgement queued")), "automated mail acknowledged: {line}");
    }
}
