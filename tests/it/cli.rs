//! The real `postdesk` binary: ingest, duplicates, routing, exit statuses, read commands.

use serde_json::Value;

use crate::harness::{postdesk, repo_path, run_command, Dir};

fn fixture(name: &str) -> String {
    repo_path(&format!("fixtures/mail/{name}")).display().to_string()
}

/// The ticket number in an ingest line such as "x.eml: new ticket N, …".
fn ticket_in(line: &str) -> String {
    line.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_digit()))
        .find(|w| w.len() == 16)
        .unwrap_or_else(|| panic!("no ticket number in {line:?}"))
        .to_owned()
}

fn tickets(dir: &Dir) -> Vec<Value> {
    dir.json(&["tickets", "list"]).as_array().expect("a JSON array").clone()
}

#[test]
fn ingest_prints_one_line_per_message_and_tickets_list_shows_them() {
    let dir = Dir::new("[ingest]\nmax_message_bytes = 32768\n");
    let run = dir.run(&["ingest", &repo_path("fixtures/mail").display().to_string()]);
    run.assert_code(0);
    let fixtures = std::fs::read_dir(repo_path("fixtures/mail")).unwrap().count();
    assert_eq!(run.stdout.lines().count(), fixtures, "{}", run.stdout);
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
fn an_unwritable_database_exits_75_so_an_mta_retries() {
    let dir = Dir::new("");
    let mut cmd = dir.command(&["ingest", "-"]);
    cmd.env("POSTDESK_DATABASE__PATH", "/nonexistent-postdesk-dir/postdesk.db");
    let run = run_command(cmd, Some(b"From: a@acme.example\nSubject: x\n\nbody\n"));
    run.assert_code(75);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("cannot open /nonexistent-postdesk-dir/postdesk.db"), "{}", run.stderr);
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
fn usage_errors_exit_1_with_one_line() {
    let dir = Dir::new("");
    let missing = dir.run(&["ingest", "/no/such/file.eml"]);
    missing.assert_code(1);
    assert!(missing.stderr.starts_with("postdesk: cannot read /no/such/file.eml"), "{}", missing.stderr);

    std::fs::write(dir.config(), "[database]\npath = 'x.db'\n[acknowledgment]\nenabled = false\n").unwrap();
    let bad = dir.run(&["check-config"]);
    bad.assert_code(1);
    assert_eq!(bad.stderr.lines().count(), 1);
    assert!(bad.stderr.contains("unknown field `acknowledgment`"), "{}", bad.stderr);

    std::fs::write(dir.config(), "[helpdesk]\naddress = 'not an address'\n[ingest]\nbatch_size = 0\n").unwrap();
    let invalid = dir.run(&["check-config"]);
    invalid.assert_code(1);
    assert!(
        invalid.stderr.contains("helpdesk.address: ") && invalid.stderr.contains("ingest.batch_size: "),
        "{}",
        invalid.stderr
    );
}

/// The example config is valid as shipped, its passwords read as systemd credentials.
#[test]
fn the_example_config_is_valid() {
    let dir = Dir::new("");
    let example = repo_path("config/postdesk.example.toml").display().to_string();
    let check = || {
        let mut cmd = postdesk(&["--config", &example, "check-config"]);
        cmd.current_dir(dir.path());
        cmd
    };
    let without = run_command(check(), None);
    without.assert_code(1);
    assert!(
        without.stderr.contains("mailbox[0].password: credential \"imap\": CREDENTIALS_DIRECTORY is not set"),
        "{}",
        without.stderr
    );
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("imap"), "imap-secret\n").unwrap();
    std::fs::write(credentials.join("smtp"), "smtp-secret\n").unwrap();
    let mut cmd = check();
    cmd.env("CREDENTIALS_DIRECTORY", &credentials);
    let run = run_command(cmd, None);
    assert!(run.assert_code(0).stdout.starts_with("configuration OK"), "{}", run.stdout);
}

/// Every file of the shared real-world corpus ends as a ticket, follow-up, duplicate or
/// failed message, and no bounce or auto-reply in it is acknowledged.
#[test]
fn the_real_world_corpus_goes_through_cleanly() {
    let corpus = repo_path("../shared/corpus");
    assert!(corpus.is_dir(), "the shared corpus is expected beside the repo at {}", corpus.display());
    let dir = Dir::new("");
    let run = dir.run(&["ingest", &corpus.display().to_string()]);
    run.assert_code(0);
    let mut files = 0;
    let mut stack = vec![corpus.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let entry = entry.unwrap();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            match entry.file_type().unwrap().is_dir() {
                true if !hidden => stack.push(entry.path()),
                false if !hidden => files += 1,
                _ => {}
            }
        }
    }
    assert_eq!(run.stdout.lines().count(), files, "one line per corpus file");
    let known = ["new ticket", "follow-up to ticket", "duplicate", "failed, kept as failed message"];
    for line in run.stdout.lines() {
        assert!(known.iter().any(|k| line.contains(k)), "unexpected outcome: {line}");
        let automated = line.contains("/sisimai/") || line.contains("/messages/bounce/");
        assert!(!(automated && line.contains("acknowledgement queued")), "automated mail acknowledged: {line}");
    }
}
