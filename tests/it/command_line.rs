//! The command line as a Unix tool, on the real binary: closed pipes, exit statuses, the
//! database only where it belongs, colour, check-config's reports, Unicode, getting bytes
//! out, failed messages, and mbox and Maildir input.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;

use serde_json::Value;

use crate::harness::{postdesk, repo_path, run_command, ticket_in, Dir};

fn fixture(name: &str) -> String {
    repo_path(&format!("fixtures/mail/{name}")).display().to_string()
}

fn mail(from: &str, subject: &str, id: &str) -> Vec<u8> {
    format!("From: {from}\nTo: support@helpdesk.example\nSubject: {subject}\nMessage-ID: <{id}>\n\nHello.\n")
        .into_bytes()
}

fn ticket_count(dir: &Dir) -> usize {
    dir.json(&["tickets", "list"]).as_array().expect("an array").len()
}

#[test]
fn a_closed_pipe_ends_quietly_and_ingest_still_ingests_everything() {
    let all = repo_path("fixtures/mail").display().to_string();
    let dir = Dir::new("");
    dir.run(&["ingest", &all]).assert_code(0);
    for args in [&["tickets", "list"][..], &["tickets", "list", "--json"], &["customers", "list"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = dir.command(args).stdin(Stdio::null()).stdout(writer).stderr(Stdio::piped()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked") && stderr.is_empty(), "{args:?}: {stderr}");
        let quiet = out.status.success() || out.status.signal() == Some(libc::SIGPIPE);
        assert!(quiet, "{args:?} ended with {:?}", out.status);
    }

    // One message per batch, so that every commit wants to print a line.
    let piped = Dir::new("[ingest]\nbatch_size = 1\n");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = piped.command(&["ingest", &all]).stdout(writer).stderr(Stdio::piped()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let files = std::fs::read_dir(repo_path("fixtures/mail")).unwrap().count();
    assert_eq!(
        stderr.trim(),
        format!("postdesk: standard output was closed; {files} more message(s) were ingested without a line")
    );
    assert_eq!(ticket_count(&piped), ticket_count(&dir), "every message was ingested");
}

#[test]
fn an_mta_pipe_gets_75_for_anything_that_is_not_the_messages_fault() {
    let message = mail("alice@acme.example", "Printer", "p1@acme.example");
    let no_config = postdesk(&["--config", "/nonexistent/postdesk.toml", "ingest", "-"]);
    let run = run_command(no_config, Some(&message));
    run.assert_code(75);
    assert!(run.stderr.contains("cannot read config file /nonexistent/postdesk.toml"), "{}", run.stderr);

    let dir = Dir::new("");
    let db = dir.path().join("postdesk.db");
    std::fs::write(dir.config(), format!("[database]\npath = '{}'\n[ingest]\nbatch_size = 'many'\n", db.display()))
        .unwrap();
    dir.run_with_stdin(&["ingest", "-"], Some(&message)).assert_code(75);
    // The same broken config for a file given by hand is an ordinary error.
    dir.run(&["ingest", &fixture("01-plain-text.eml")]).assert_code(1);

    // An MTA's pipe never creates the database: missing, it is a failure to retry.
    std::fs::write(dir.config(), format!("[database]\npath = '{}'\n", db.display())).unwrap();
    let missing = dir.run_with_stdin(&["ingest", "-"], Some(&message));
    missing.assert_code(75);
    assert!(missing.stderr.contains(&format!("no database at {}", db.display())), "{}", missing.stderr);
    dir.run(&["ingest", &fixture("02-html-only.eml")]).assert_code(0);

    // Ingesting reads no password: a credential missing here does not stop the mail.
    let mailbox = "[[mailbox]]\nname = 'support'\naddress = 'support@helpdesk.example'\nhost = 'imap.example'\n\
                   username = 'support'\npassword_credential = 'imap'\n";
    std::fs::write(dir.config(), format!("[database]\npath = '{}'\n{mailbox}", db.display())).unwrap();
    let mut cmd = dir.command(&["ingest", "-"]);
    cmd.env_remove("CREDENTIALS_DIRECTORY");
    assert!(run_command(cmd, Some(&message)).assert_code(0).stdout.contains("new ticket"));
    // …but running the daemon without it is refused at once, naming the key.
    let mut daemon = dir.command(&["run", "--once"]);
    daemon.env_remove("CREDENTIALS_DIRECTORY");
    let refused = run_command(daemon, None);
    refused.assert_code(1);
    assert!(refused.stderr.contains("mailbox[0].password: credential \"imap\""), "{}", refused.stderr);

    // Only a usage error is 64.
    dir.run_with_stdin(&["ingest"], Some(&message)).assert_code(64);
}

#[test]
fn only_ingest_and_run_create_the_database() {
    let dir = Dir::new("");
    let db = dir.path().join("postdesk.db");
    for args in [
        &["tickets", "list"][..],
        &["customers", "list"],
        &["orgs", "list"],
        &["outbox", "list"],
        &["failed", "list"],
        &["customers", "add", "--email", "a@b.example"],
    ] {
        let run = dir.run(args);
        run.assert_code(1);
        assert!(run.stderr.starts_with(&format!("postdesk: no database at {}: ", db.display())), "{}", run.stderr);
    }
    assert!(!db.exists(), "a command other than ingest or run created the database");
    dir.run(&["ingest", &fixture("01-plain-text.eml")]).assert_code(0);
    dir.run(&["tickets", "list"]).assert_code(0);
}

fn maildir(root: &Path) -> &Path {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    root
}

#[test]
fn maildirs_with_their_folders_and_mbox_files() {
    let dir = Dir::new("");
    let root = maildir(&dir.path().join("Maildir")).to_owned();
    let empty = dir.run(&["ingest", &root.display().to_string()]);
    empty.assert_code(0);
    assert_eq!(empty.stdout, "");
    assert!(empty.stderr.contains("no new messages"), "{}", empty.stderr);

    std::fs::write(root.join("new/1.host"), mail("a@one.example", "in new", "1@one")).unwrap();
    std::fs::write(root.join("cur/2.host:2,S"), mail("b@two.example", "in cur", "2@two")).unwrap();
    std::fs::write(root.join("tmp/3.host"), mail("c@three.example", "still being written", "3@three")).unwrap();
    std::fs::write(root.join("dovecot-uidlist"), "3 V1700000000 N3\n").unwrap();
    let support = maildir(&root.join(".Support")).to_owned();
    std::fs::write(support.join("new/4.host"), mail("d@four.example", "in a folder", "4@four")).unwrap();
    let trash = maildir(&root.join(".Trash")).to_owned();
    std::fs::write(trash.join("cur/5.host:2,ST"), mail("e@five.example", "deleted", "5@five")).unwrap();
    let run = dir.run(&["ingest", &root.display().to_string()]);
    run.assert_code(0);
    assert_eq!(run.stdout.lines().count(), 3, "{}", run.stdout);
    assert!(run.stdout.lines().all(|l| l.contains("new ticket")), "{}", run.stdout);
    assert!(run.stderr.contains(&format!("skipping {}", trash.display())), "{}", run.stderr);
    assert!(root.join("new/1.host").exists(), "files are only read");

    let mbox = dir.path().join("archive.mbox");
    let mut text = Vec::new();
    for (i, from) in ["f@six.example", "g@seven.example", "h@eight.example"].iter().enumerate() {
        text.extend_from_slice(format!("From {from} Mon Nov 23 10:00:0{i} 2026\n").as_bytes());
        text.extend_from_slice(&mail(from, &format!("mbox {i}"), &format!("m{i}@mbox")));
        text.extend_from_slice(b">From the start of a line\n\n");
    }
    std::fs::write(&mbox, text).unwrap();
    let run = dir.run(&["ingest", &mbox.display().to_string()]);
    run.assert_code(0);
    let labels: Vec<&str> = run.stdout.lines().map(|l| l.split(": ").next().unwrap()).collect();
    let path = mbox.display().to_string();
    assert_eq!(labels, [format!("{path}#1"), format!("{path}#2"), format!("{path}#3")]);
    let number = ticket_in(run.stdout.lines().next().unwrap());
    let shown = dir.json(&["tickets", "show", &number]);
    assert_eq!(shown["article_list"][0]["body"].as_str().unwrap().trim(), "Hello.\nFrom the start of a line");
}

#[test]
fn check_config_reports_every_problem_in_our_words() {
    let dir = Dir::new("");
    let db = dir.path().join("postdesk.db").display().to_string();
    let mailbox = |name: &str, extra: &str| {
        format!(
            "[[mailbox]]\nname = '{name}'\naddress = 'support@helpdesk.example'\nhost = 'imap.example'\n\
             username = 'u'\npassword = 'p'\n{extra}"
        )
    };
    let write = |text: String| std::fs::write(dir.config(), format!("[database]\npath = '{db}'\n{text}")).unwrap();

    write(format!(
        "[ingest]\nbatch_size = 'many'\n[acknowledgement]\nenabled = 'perhaps'\n{}",
        mailbox("support", "tls = 'maybe'\n")
    ));
    let run = dir.run(&["check-config"]);
    run.assert_code(1);
    for problem in [
        "ingest.batch_size: \"many\" is not a whole number of 0 or more",
        "mailbox[0].tls: \"maybe\" is not one of implicit, starttls, none",
        "acknowledgement.enabled: \"perhaps\" is not true or false",
    ] {
        assert!(run.stderr.contains(problem), "{problem} missing from:\n{}", run.stderr);
    }
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);

    std::fs::write(dir.path().join("ack.j2"), "Dear {{ customer_nmae }}").unwrap();
    write(format!(
        "[acknowledgement]\ntemplate = 'ack.j2'\n{}{}",
        mailbox("support", ""),
        mailbox("support", "folder = 'Other'\n")
    ));
    let run = dir.run(&["check-config"]);
    run.assert_code(1);
    assert!(run.stderr.contains("mailbox[1].name: \"support\" is used by another mailbox"), "{}", run.stderr);
    assert!(run.stderr.contains("acknowledgement.template: template does not render"), "{}", run.stderr);

    // [smtp] with acknowledgements turned off would send nothing: said, not refused.
    write("[acknowledgement]\nenabled = false\n[smtp]\nhost = 'smtp.example'\n".to_owned());
    let run = dir.run(&["check-config"]);
    run.assert_code(0);
    assert!(run.stderr.contains("warning: [smtp] is configured but acknowledgement.enabled = false"), "{}", run.stderr);

    // The portal mails its sign-in links; its public form needs the web server.
    write("[web]\nlisten = '127.0.0.1:8080'\n".to_owned());
    let run = dir.run(&["check-config"]);
    run.assert_code(0);
    assert!(run.stderr.contains("warning: [web] serves the portal but no [smtp] is configured"), "{}", run.stderr);
    write("[portal]\npublic_form = true\n".to_owned());
    let run = dir.run(&["check-config"]);
    assert!(run.stderr.contains("warning: portal.public_form = true, but without [web] listen"), "{}", run.stderr);

    // A database directory that does not exist yet (systemd makes it at the first start).
    std::fs::write(dir.config(), "[database]\npath = '/nonexistent-postdesk/postdesk.db'\n").unwrap();
    let run = dir.run(&["check-config"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("database.path: the directory of /nonexistent-postdesk/postdesk.db does not exist (yet)"),
        "{}",
        run.stderr
    );
}

#[test]
fn outbox_retry_promises_delivery_only_with_an_smtp_server() {
    let dir = Dir::new("");
    dir.run(&["ingest", &fixture("01-plain-text.eml")]).assert_code(0);
    let retry = dir.run(&["outbox", "retry", "--all"]);
    assert!(retry.assert_code(0).stdout.contains("no [smtp] is configured, so they wait"), "{}", retry.stdout);
    let mut with_smtp = dir.command(&["outbox", "retry", "--all"]);
    with_smtp.env("POSTDESK_SMTP__HOST", "smtp.example");
    let run = run_command(with_smtp, None);
    assert!(run.assert_code(0).stdout.contains("a running `postdesk run` sends them"), "{}", run.stdout);
}

#[test]
fn logs_have_colour_only_on_a_terminal() {
    // [smtp] alone: `run` only sends acknowledgements (here there are none) and logs that.
    let dir = Dir::new("[smtp]\nhost = '127.0.0.1'\nport = 9\ntls = 'none'\n");
    let run = dir.run(&["run", "--once"]);
    run.assert_code(0);
    assert!(run.stderr.contains("only sending the acknowledgements"), "{}", run.stderr);
    assert!(!run.stderr.contains('\u{1b}'), "escape codes in a log that is not a terminal: {:?}", run.stderr);
}

#[test]
fn names_match_sort_and_align_across_unicode() {
    let dir = Dir::new("");
    dir.run(&["ingest", &fixture("01-plain-text.eml")]).assert_code(0);
    for (email, name) in [("zoe@example.org", "Zoë Ångström"), ("li@example.cn", "李小龍"), ("zed@example.org", "Zed")]
    {
        dir.run(&["customers", "add", "--email", email, "--name", name]).assert_code(0);
    }
    let found = dir.run(&["customers", "list", "--search", "ÅNGSTRÖM"]);
    let rows: Vec<&str> = found.assert_code(0).stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{}", found.stdout);
    assert!(rows[0].starts_with("Zoë Ångström"), "{}", found.stdout);

    let all = dir.run(&["customers", "list"]);
    let lines: Vec<&str> = all.assert_code(0).stdout.lines().collect();
    let names: Vec<&str> = lines[1..].iter().map(|l| l.split("  ").next().unwrap()).collect();
    assert_eq!(names, ["Alice Martin", "Zed", "Zoë Ångström", "李小龍"], "{}", all.stdout);
    // The EMAIL column starts at the same display column on every line.
    use unicode_width::UnicodeWidthStr;
    let column = |line: &str, needle: &str| line[..line.find(needle).unwrap()].width();
    let header = column(lines[0], "EMAIL");
    for (line, email) in lines[1..].iter().zip(["alice.martin@", "zed@", "zoe@", "li@"]) {
        assert_eq!(column(line, email), header, "misaligned:\n{}", all.stdout);
    }

    dir.run(&["orgs", "add", "Ärzte Verbund"]).assert_code(0);
    let taken = dir.run(&["orgs", "add", "ärzte verbund"]);
    taken.assert_code(1);
    assert!(taken.stderr.contains("already exists"), "{}", taken.stderr);
    dir.run(&["orgs", "show", "ÄRZTE VERBUND"]).assert_code(0);
}

#[test]
fn ticket_numbers_are_checked_and_bytes_come_out() {
    let dir = Dir::new("");
    let all = repo_path("fixtures/mail").display().to_string();
    let ingested = dir.run(&["ingest", &all]);
    let line = ingested.assert_code(0).lines_with("03-multipart-attachments.eml")[0].to_owned();
    let number = ticket_in(&line);

    let mut typo = number.clone().into_bytes();
    typo.swap(12, 13);
    if typo == number.as_bytes() {
        typo[13] = if typo[13] == b'9' { b'0' } else { typo[13] + 1 };
    }
    let typo = String::from_utf8(typo).unwrap();
    let wrong = dir.run(&["tickets", "show", &typo]);
    wrong.assert_code(64);
    assert!(wrong.stderr.contains("is not a valid ticket number"), "{}", wrong.stderr);

    let raw = dir.run(&["tickets", "show", &number, "--raw", "1"]);
    let original = std::fs::read(fixture("03-multipart-attachments.eml")).unwrap();
    assert_eq!(raw.assert_code(0).stdout, String::from_utf8_lossy(&original));
    dir.run(&["tickets", "show", &number, "--raw", "9"]).assert_code(1);

    let out = dir.path().join("files");
    let saved = dir.run(&["tickets", "attachment", &number, "--output", &out.display().to_string()]);
    assert_eq!(saved.assert_code(0).stdout.lines().count(), 2, "{}", saved.stdout);
    let csv = std::fs::read(out.join("passwd.csv")).unwrap();
    assert!(!csv.is_empty() && out.join("invoice 2026-11.pdf").is_file());
    let one = dir.run(&["tickets", "attachment", &number, "passwd.csv"]);
    assert_eq!(one.assert_code(0).stdout, String::from_utf8_lossy(&csv));
    dir.run(&["tickets", "attachment", &number, "nothing.txt"]).assert_code(1);

    let newest: Vec<Value> = dir.json(&["tickets", "list", "--limit", "2"]).as_array().unwrap().clone();
    let every: Vec<Value> = dir.json(&["tickets", "list"]).as_array().unwrap().clone();
    assert_eq!(newest.len(), 2);
    assert_eq!((&newest[0], &newest[1]), (&every[0], &every[1]));
    assert!(every[0]["number"].as_str() > every[1]["number"].as_str(), "newest first");
    let badge = dir.json(&["tickets", "list", "--search", "LEEDS WAREHOUSE"]);
    let found = badge.as_array().unwrap();
    assert!(found.iter().any(|t| t["subject"] == "Badge reader broken"), "{badge}");
    assert!(found.len() < every.len() && found.len() <= 2, "only the tickets that say it: {badge}");
    assert_eq!(dir.json(&["tickets", "list", "--since", "2999-01-01"]), Value::Array(Vec::new()));
    dir.run(&["tickets", "list", "--since", "yesterday"]).assert_code(64);
}

#[test]
fn failed_messages_show_where_they_came_from_and_can_be_retried() {
    let dir = Dir::new("[ingest]\nmax_message_bytes = 1024\n");
    let junk = dir.path().join("notes.txt");
    std::fs::write(&junk, "just some notes, not a message\n").unwrap();
    let big = fixture("03-multipart-attachments.eml");
    dir.run(&["ingest", &junk.display().to_string(), &big]).assert_code(0);

    let listed = dir.run(&["failed", "list"]);
    listed.assert_code(0);
    assert!(listed.stdout.contains("notes.txt") && listed.stdout.contains("03-multipart"), "{}", listed.stdout);
    let shown = dir.run(&["failed", "show", "1"]);
    assert!(shown.assert_code(0).stdout.contains(&junk.display().to_string()), "{}", shown.stdout);
    let exported = dir.run(&["failed", "export", "1"]);
    assert_eq!(exported.assert_code(0).stdout, "just some notes, not a message\n");
    dir.run(&["failed", "show", "99"]).assert_code(1);

    let retried = dir.run(&["failed", "retry", "--all"]);
    retried.assert_code(0);
    assert!(retried.stdout.contains("#1 (") && retried.stdout.contains("failed, kept as failed message #1"));
    assert!(retried.stdout.contains("#2 (") && retried.stdout.contains("not retried"), "{}", retried.stdout);
    let failed = dir.json(&["failed", "list"]);
    assert_eq!(failed[0]["attempts"], 2, "{failed}");
}

/// Two processes that open a new database at the same moment (two daemons starting,
/// an MTA delivering two messages) both create it cleanly: migrating is serialised.
#[test]
fn two_processes_on_a_new_database_both_start_cleanly() {
    for trial in 0..8 {
        let dir = Dir::new("");
        let children: Vec<_> = ["01-plain-text.eml", "02-html-only.eml", "11-free-mail.eml"]
            .iter()
            .map(|f| {
                dir.command(&["ingest", &fixture(f)])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "trial {trial}: {stderr}");
        }
        assert_eq!(ticket_count(&dir), 3, "trial {trial}");
    }
}

/// A relative database path is relative to the config file, wherever the command runs
/// (an MTA runs `ingest -` from its own directory).
#[test]
fn a_relative_database_path_is_relative_to_the_config_file() {
    let dir = Dir::new("");
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.config(), "[database]\npath = 'data/desk.db'\n").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let mut cmd = dir.command(&["ingest", &fixture("01-plain-text.eml")]);
    cmd.current_dir(elsewhere.path());
    run_command(cmd, None).assert_code(0);
    assert!(dir.path().join("data/desk.db").is_file());
    assert!(!elsewhere.path().join("data").exists());
}
