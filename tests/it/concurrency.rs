//! Several writers on one database at once: two `postdesk ingest` processes over
//! overlapping mail and two acknowledgement senders (`postdesk run` with only `[smtp]`)
//! against one SMTP server. Every message becomes exactly one ticket with a number of its
//! own, nothing is filed as failed, and every ticket gets exactly one acknowledgement.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{run_command, Backend, Dir};
use crate::smtp::{SmtpOptions, SmtpServer};

const HELPDESK: &str = "support@helpdesk.test";
const MESSAGES: usize = 240;
/// Messages `OVERLAP` before the middle are in both ingest processes' directories.
const OVERLAP: usize = 60;

fn message(i: usize) -> String {
    format!(
        "From: Customer {i} <c{i}@org{}.test>\r\nTo: {HELPDESK}\r\nSubject: Request {i}\r\n\
         Message-ID: <req-{i}@org{}.test>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\n\r\nPlease help with {i}.\r\n",
        i % 20,
        i % 20
    )
}

fn write_messages(dir: &Path, range: std::ops::Range<usize>) {
    std::fs::create_dir(dir).expect("create the mail directory");
    for i in range {
        std::fs::write(dir.join(format!("{i:04}.eml")), message(i)).expect("write a message");
    }
}

/// A process of `dir`'s postdesk, its output kept for the failure message.
fn spawn(dir: &Dir, args: &[&str]) -> Child {
    dir.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start postdesk")
}

fn outbox_states(dir: &Dir) -> HashMap<String, usize> {
    let mut states = HashMap::new();
    for row in dir.json(&["outbox", "list"]).as_array().expect("a list") {
        *states.entry(row["state"].as_str().expect("a state").to_owned()).or_default() += 1;
    }
    states
}

fn two_ingests_and_two_senders_on_one_database(backend: Backend) {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let dir = Dir::with_database_on(
        backend,
        &format!(
            "[helpdesk]\naddress = \"{HELPDESK}\"\ninternal_domains = []\n\
         [ingest]\nbatch_size = 10\n\
         [acknowledgement]\nmax_per_sender_per_day = 100\nmax_per_domain_per_day = 1000\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
            smtp.port()
        ),
    );
    let middle = MESSAGES / 2;
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    write_messages(&a, 0..middle + OVERLAP);
    write_messages(&b, middle - OVERLAP..MESSAGES);

    let mut senders: Vec<Child> = (0..2).map(|_| spawn(&dir, &["run"])).collect();
    let ingests: Vec<Child> = [&a, &b].iter().map(|d| spawn(&dir, &["ingest", &d.display().to_string()])).collect();
    let mut lines = Vec::new();
    for ingest in ingests {
        let out = ingest.wait_with_output().expect("wait for ingest");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "ingest failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
        lines.extend(stdout.lines().map(str::to_owned));
    }
    assert_eq!(lines.len(), MESSAGES + 2 * OVERLAP, "a line per message read");
    let failed: Vec<&String> = lines.iter().filter(|l| l.contains("failed")).collect();
    assert!(failed.is_empty(), "messages filed as failed: {failed:?}");

    let tickets = dir.json(&["tickets", "list", "--limit", "10000"]);
    let numbers: BTreeSet<&str> =
        tickets.as_array().expect("a list").iter().map(|t| t["number"].as_str().expect("a number")).collect();
    assert_eq!(tickets.as_array().unwrap().len(), MESSAGES, "one ticket per message");
    assert_eq!(numbers.len(), MESSAGES, "ticket numbers are unique");
    assert_eq!(dir.json(&["failed", "list"]).as_array().map(Vec::len), Some(0));

    smtp.wait_received(MESSAGES, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while outbox_states(&dir).get("sent") != Some(&MESSAGES) {
        assert!(Instant::now() < deadline, "outbox not all sent: {:?}", outbox_states(&dir));
        std::thread::sleep(Duration::from_millis(50));
    }
    for sender in &mut senders {
        let mut kill = std::process::Command::new("kill");
        kill.args(["-TERM", &sender.id().to_string()]);
        run_command(kill, None).assert_code(0);
        let out = sender.wait().expect("wait for the sender");
        assert!(out.success(), "a sender ended with {out}");
    }
    let received = smtp.received_messages();
    let recipients: BTreeSet<&str> = received.iter().flat_map(|m| m.rcpt_to.iter().map(String::as_str)).collect();
    assert_eq!(received.len(), MESSAGES, "one acknowledgement per ticket, none twice");
    assert_eq!(recipients.len(), MESSAGES, "each customer acknowledged once");
}

on_both!(two_ingests_and_two_senders_on_one_database);
