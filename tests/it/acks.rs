//! Acknowledgements end to end: a customer's mail, received by a private Postfix, lands
//! in the helpdesk's Dovecot mailbox by LMTP; `postdesk run --once` makes the ticket and
//! submits the acknowledgement to that Postfix (STARTTLS, AUTH through Dovecot), which
//! delivers it into the customer's Dovecot mailbox. Automated mail, loops, the per-sender
//! cap, outages (451) and permanent failures (550) answered by Postfix's access table.
//!
//! The pipe-only daemons below keep the Python test server (`smtp.rs`), for what Postfix
//! cannot do: hold a DATA transaction open until the test lets it go, and record every
//! transaction it was offered, so that a duplicate sent by a crashed daemon is counted.

use std::time::Duration;

use serde_json::Value;

use crate::dovecot::{Dovecot, Options};
use crate::harness::{Backend, Dir};
use crate::postfix::Postfix;
use crate::smtp::{Mode, SmtpOptions, SmtpServer};

const HELPDESK: &str = "support@mail.test";
const ALICE: &str = "alice@mail.test";
const ROBOT: &str = "robot@mail.test";
const PASSWORD: &str = "pw-acks";

struct World {
    // Dropped first: it delivers into Dovecot.
    postfix: Postfix,
    dovecot: Dovecot,
    dir: Dir,
}

impl World {
    fn new(extra: &str) -> World {
        World::on(Backend::Sqlite, extra)
    }

    fn on(backend: Backend, extra: &str) -> World {
        let users = [(HELPDESK, PASSWORD), (ALICE, PASSWORD), (ROBOT, PASSWORD)];
        let dovecot = Dovecot::start_with(&users, Options { mta: true, ..Options::default() });
        let postfix = Postfix::start(&dovecot, &[]);
        let config = format!(
            "[helpdesk]\naddress = \"{HELPDESK}\"\ninternal_domains = []\n\
             [[mailbox]]\nname = \"support\"\naddress = \"{HELPDESK}\"\nhost = \"127.0.0.1\"\nport = {}\n\
             ca_file = \"{ca}\"\nusername = \"{HELPDESK}\"\npassword = \"{PASSWORD}\"\n\
             [smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nca_file = \"{ca}\"\n\
             username = \"{HELPDESK}\"\npassword = \"{PASSWORD}\"\n{extra}",
            dovecot.imaps_port(),
            postfix.port(),
            ca = dovecot.ca_file().display(),
        );
        World { postfix, dovecot, dir: Dir::on(backend, &config) }
    }

    /// A customer's mail reaches the helpdesk's mailbox through Postfix.
    fn send(&self, from: &str, raw: &str) {
        self.postfix.receive(from, HELPDESK, raw.as_bytes());
        self.postfix.settle();
    }

    /// `run --once`, then until Postfix has delivered what it was given.
    fn run_once(&self) -> String {
        let run = self.dir.run(&["run", "--once"]);
        run.assert_code(0);
        self.postfix.settle();
        run.stderr.clone()
    }

    fn inbox(&self, user: &str) -> Vec<String> {
        self.dovecot.messages(user, "INBOX").into_iter().map(|m| String::from_utf8_lossy(&m).into_owned()).collect()
    }

    fn outbox(&self) -> Vec<Value> {
        self.dir.json(&["outbox", "list"]).as_array().unwrap().clone()
    }

    fn tickets(&self) -> Vec<Value> {
        self.dir.json(&["tickets", "list"]).as_array().unwrap().clone()
    }
}

fn mail(from: &str, id: &str, subject: &str, headers: &str) -> String {
    format!(
        "From: {from}\r\nTo: {HELPDESK}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n{headers}\r\nPlease help.\r\n"
    )
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    let head = message.split("\r\n\r\n").next().unwrap_or("");
    head.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(": ")))
}

fn one_acknowledgement_per_ticket_and_a_reply_to_it_is_a_follow_up(backend: Backend) {
    let world = World::on(backend, "");
    world.send(ALICE, &mail(&format!("Alice <{ALICE}>"), "q1@mail.test", "Printer jammed", ""));
    let log = world.run_once();
    let tickets = world.tickets();
    assert_eq!(tickets.len(), 1, "{log}");
    let number = tickets[0]["number"].as_str().unwrap().to_owned();
    assert_eq!(tickets[0]["ack"], "sent", "{log}");

    let inbox = world.inbox(ALICE);
    assert_eq!(inbox.len(), 1, "exactly one acknowledgement: {inbox:#?}");
    let ack = &inbox[0];
    assert_eq!(header(ack, "Subject"), Some(&*format!("[Ticket#{number}] Printer jammed")), "{ack}");
    assert_eq!(header(ack, "Auto-Submitted"), Some("auto-replied"));
    assert_eq!(header(ack, "X-Auto-Response-Suppress"), Some("All"));
    let ack_id = header(ack, "Message-ID").expect("a Message-ID");
    let unfolded = ack.replace("\r\n ", " ");
    assert_eq!(header(&unfolded, "X-Postdesk-Loop"), Some(&*format!("{HELPDESK} {ack_id}")));
    assert_eq!(header(ack, "In-Reply-To"), Some("<q1@mail.test>"));
    assert_eq!(header(ack, "References"), Some("<q1@mail.test>"));
    assert!(ack.contains(&number), "the body quotes the ticket number:\n{ack}");
    let ack_id = header(ack, "Message-ID").expect("a Message-ID").to_owned();

    // Alice answers the acknowledgement from her mail client (no tag kept, only threading).
    let reply =
        mail(ALICE, "q2@mail.test", "Re: your request", &format!("In-Reply-To: {ack_id}\r\nReferences: {ack_id}\r\n"));
    world.send(ALICE, &reply);
    world.run_once();
    let tickets = world.tickets();
    assert_eq!(tickets.len(), 1, "the reply is a follow-up");
    assert_eq!(tickets[0]["articles"], 2);
    assert_eq!(world.inbox(ALICE).len(), 1, "no second acknowledgement");
    assert_eq!(world.outbox().len(), 1);
}

#[test]
fn automated_mail_and_our_own_mail_get_no_acknowledgement() {
    let world = World::new("");
    world.send(ALICE, &mail(ALICE, "auto@mail.test", "Out of office", "Auto-Submitted: auto-replied\r\n"));
    world.send(ALICE, &mail(ALICE, "list@mail.test", "Digest", "List-Id: <news.mail.test>\r\nPrecedence: list\r\n"));
    world.send(ALICE, &mail("MAILER-DAEMON@mail.test", "dsn@mail.test", "Undelivered Mail Returned to Sender", ""));
    world.send(HELPDESK, &mail(HELPDESK, "self@mail.test", "A note from ourselves", ""));
    world.run_once();
    let acks: Vec<String> = world.tickets().iter().map(|t| t["ack"].as_str().unwrap().to_owned()).collect();
    assert_eq!(acks, ["own-address", "bounce", "bulk", "auto-reply"], "newest first");
    assert!(world.outbox().is_empty());
    assert!(world.inbox(ALICE).is_empty());
    assert_eq!(world.postfix.delivered(), 4, "only the four customers' mails went through the MTA");
}

/// A careless auto-responder answers everything, without any auto-reply header and with
/// a fresh subject each time. The exchange stops by itself at the per-sender cap.
fn an_auto_responder_cannot_start_a_mail_storm(backend: Backend) {
    let world = World::on(backend, "[acknowledgement]\nmax_per_sender_per_day = 3\n");
    world.send(ROBOT, &mail(ROBOT, "robot-0@mail.test", "Hello", ""));
    let mut answered = 0;
    for round in 1..=10 {
        world.run_once();
        let inbox = world.inbox(ROBOT);
        if inbox.len() == answered {
            break;
        }
        for _ in answered..inbox.len() {
            world.send(
                ROBOT,
                &mail(ROBOT, &format!("robot-{round}-{answered}@mail.test"), &format!("Thanks {round}"), ""),
            );
        }
        answered = inbox.len();
        assert!(round < 10, "the exchange did not stop");
    }
    assert_eq!(world.inbox(ROBOT).len(), 3, "acknowledgements stop at the per-sender cap");
    let capped = world.tickets().iter().filter(|t| t["ack"] == "per-sender limit reached (3 in 24 h)").count();
    assert_eq!(capped, 1);
}

#[test]
fn the_per_sender_cap_holds_over_many_new_tickets() {
    let world = World::new("[acknowledgement]\nmax_per_sender_per_day = 3\n");
    for i in 0..4 {
        world.send(ALICE, &mail(ALICE, &format!("cap-{i}@mail.test"), &format!("Request {i}"), ""));
    }
    world.run_once();
    assert_eq!(world.tickets().len(), 4);
    assert_eq!(world.inbox(ALICE).len(), 3);
}

fn an_smtp_outage_delays_acknowledgements_and_each_is_sent_once(backend: Backend) {
    let world = World::on(backend, "");
    world.dovecot.append(HELPDESK, "INBOX", mail(ALICE, "down-1@mail.test", "While down", "").as_bytes());
    world.postfix.set_answers(&[(ALICE, "451 4.3.0 mailbox unavailable, try later")]);
    let log = world.run_once();
    let row = &world.outbox()[0];
    assert_eq!((row["state"].as_str(), row["attempts"].as_u64()), (Some("queued"), Some(1)), "{log}");
    assert!(row["last_error"].as_str().is_some_and(|e| e.contains("451")), "{row}");

    // A restart of postdesk in between changes nothing: the row waits for its next attempt.
    world.run_once();
    assert_eq!(world.outbox()[0]["attempts"], 1);

    world.postfix.set_answers(&[]);
    let retry = world.dir.run(&["outbox", "retry", "--all"]);
    assert!(retry.assert_code(0).stdout.starts_with("1 acknowledgement(s) queued"), "{}", retry.stdout);
    world.run_once();
    world.run_once();
    assert_eq!(world.outbox()[0]["state"], "sent");
    assert_eq!(world.inbox(ALICE).len(), 1, "delivered exactly once");
}

fn a_permanent_failure_is_recorded_with_the_server_reply(backend: Backend) {
    let world = World::on(backend, "");
    world.send(ALICE, &mail(ALICE, "perm@mail.test", "Bad address", ""));
    world.postfix.set_answers(&[(ALICE, "550 5.1.1 no such user")]);
    world.run_once();
    let row = &world.outbox()[0];
    assert_eq!(row["state"], "failed");
    assert!(row["last_error"].as_str().unwrap().contains("550"), "{row}");
    let listed = world.dir.run(&["outbox", "list"]);
    assert!(listed.assert_code(0).stdout.contains("failed"), "{}", listed.stdout);
    assert_eq!(world.tickets()[0]["ack"], "failed");
}

/// Mail piped in by an MTA (`ingest -`), no `[[mailbox]]`: `postdesk run` only sends the
/// acknowledgements. Two such daemons on one database, started together over a backlog,
/// claim the rows between them: every acknowledgement reaches the server exactly once.
#[test]
fn two_pipe_only_daemons_send_each_acknowledgement_once() {
    use std::process::{Command, Stdio};

    let smtp = SmtpServer::start(SmtpOptions::default());
    let dir = Dir::with_database(&format!(
        "[helpdesk]\naddress = \"{HELPDESK}\"\ninternal_domains = []\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
        smtp.port()
    ));
    let customers = 30;
    for n in 0..customers {
        let from = format!("customer{n}@org{n}.test");
        let raw = mail(&from, &format!("pipe-{n}@org{n}.test"), &format!("Request {n}"), "");
        let run = dir.run_with_stdin(&["ingest", "-"], Some(raw.as_bytes()));
        assert!(run.assert_code(0).stdout.contains("acknowledgement queued"), "{}", run.stdout);
    }
    let spawn = |n: usize| {
        let log = dir.path().join(format!("daemon-{n}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_postdesk"))
            .arg("--config")
            .arg(dir.config())
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn postdesk run");
        (child, log)
    };
    let daemons = [spawn(1), spawn(2)];
    smtp.wait_received(customers, Duration::from_secs(30));
    // A message queued while both run is picked up without a nudge from its process.
    let late = mail("late@late.test", "late@late.test", "Late", "");
    dir.run_with_stdin(&["ingest", "-"], Some(late.as_bytes())).assert_code(0);
    smtp.wait_received(customers + 1, Duration::from_secs(30));
    for (child, log) in daemons {
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = child.wait_with_output().unwrap().status;
        let log = std::fs::read_to_string(log).unwrap();
        assert_eq!(status.code(), Some(0), "{log}");
        assert!(log.contains("only sending the acknowledgements"), "{log}");
    }
    // Both have stopped: nothing more can arrive.
    let received = smtp.received_messages();
    let mut recipients: Vec<&str> = received.iter().flat_map(|m| m.rcpt_to.iter().map(String::as_str)).collect();
    recipients.sort();
    let before = recipients.len();
    recipients.dedup();
    assert_eq!((before, recipients.len()), (customers + 1, customers + 1), "each acknowledgement once");
    let outbox = dir.json(&["outbox", "list"]);
    assert!(outbox.as_array().unwrap().iter().all(|r| r["state"] == "sent" && r["attempts"] == 1), "{outbox}");
}

/// A pipe-only daemon (`[smtp]`, no mailbox) on a database with `customers` acknowledgements
/// queued, its log at debug level.
struct PipeDaemon {
    smtp: SmtpServer,
    dir: Dir,
    child: Option<std::process::Child>,
}

impl PipeDaemon {
    /// Ready to `start`.
    fn new(customers: usize) -> PipeDaemon {
        let smtp = SmtpServer::start(SmtpOptions::default());
        let dir = Dir::with_database(&format!(
            "[helpdesk]\naddress = \"{HELPDESK}\"\ninternal_domains = []\n\
             [smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
            smtp.port()
        ));
        for n in 0..customers {
            let raw = mail(&format!("c{n}@org{n}.test"), &format!("due-{n}@org{n}.test"), &format!("Request {n}"), "");
            dir.run_with_stdin(&["ingest", "-"], Some(raw.as_bytes())).assert_code(0);
        }
        PipeDaemon { smtp, dir, child: None }
    }

    fn start(&mut self) {
        let dir = &self.dir;
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_postdesk"))
            .arg("--config")
            .arg(dir.config())
            .arg("run")
            .env("RUST_LOG", "postdesk=debug")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
            .spawn()
            .expect("spawn postdesk run");
        self.child = Some(child);
    }

    /// `BEGIN EXCLUSIVE` on another connection: writes wait, then fail after the busy
    /// timeout; reads go on (WAL).
    fn lock(&self) -> rusqlite::Connection {
        let lock = rusqlite::Connection::open(self.dir.path().join("postdesk.db")).unwrap();
        lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
        lock
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn wait_for_log(&self, needle: &str, limit: Duration) {
        let start = std::time::Instant::now();
        while !self.log().contains(needle) {
            assert!(start.elapsed() < limit, "no {needle:?} in the log within {limit:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM; the daemon must have run until now, every task alive, and exit 0.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("started");
        let log = self.log();
        if child.try_wait().unwrap().is_some() || log.contains("has stopped") {
            let _ = child.kill();
            panic!("the daemon ended or a task stopped:\n{log}");
        }
        assert!(std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success());
        assert_eq!(child.wait().unwrap().code(), Some(0), "{}", self.log());
    }
}

impl Drop for PipeDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

const LOCKED: &str = "the acknowledgement sender: the database cannot be written now";

/// The database locked for longer than the busy timeout while acknowledgements are due
/// (issue 12, point 1): the sender says so once, keeps trying with backoff, and sends
/// every acknowledgement once the lock is gone; it never stops.
#[test]
fn the_sender_survives_a_locked_database() {
    let customers = 5;
    let mut daemon = PipeDaemon::new(customers);
    // Taken before the daemon starts: it opens and reads the database, but cannot claim.
    let lock = daemon.lock();
    daemon.start();
    daemon.wait_for_log(LOCKED, Duration::from_secs(30));
    assert!(daemon.smtp.received().is_empty(), "nothing is sent while the claims cannot be written");
    lock.execute_batch("COMMIT").unwrap();
    daemon.smtp.wait_received(customers, Duration::from_secs(30));
    daemon.wait_for_log("sending resumes", Duration::from_secs(10));
    daemon.stop();
    let mut recipients: Vec<String> = daemon.smtp.received_messages().into_iter().flat_map(|m| m.rcpt_to).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), customers, "each acknowledgement once");
}

/// An acknowledgement the server accepted while the database was locked (between its
/// claim and its record) is recorded as sent once the lock is gone, not held until its
/// claim runs out and then sent again.
#[test]
fn an_acceptance_that_cannot_be_recorded_is_recorded_later() {
    let mut daemon = PipeDaemon::new(0);
    daemon.smtp.set_mode(Mode::Hold);
    daemon.start();
    let raw = mail("held@org.test", "held@org.test", "Held", "");
    daemon.dir.run_with_stdin(&["ingest", "-"], Some(raw.as_bytes())).assert_code(0);
    let start = std::time::Instant::now();
    while !daemon.smtp.log().contains("DATA held") {
        assert!(start.elapsed() < Duration::from_secs(30), "no delivery began:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let lock = daemon.lock();
    daemon.smtp.set_mode(Mode::Accept);
    daemon.smtp.wait_received(1, Duration::from_secs(10));
    daemon.wait_for_log(LOCKED, Duration::from_secs(30));
    lock.execute_batch("COMMIT").unwrap();
    daemon.wait_for_log("recorded now", Duration::from_secs(30));
    daemon.stop();
    let outbox = daemon.dir.json(&["outbox", "list"]);
    assert_eq!((outbox[0]["state"].as_str(), outbox[0]["attempts"].as_u64()), (Some("sent"), Some(1)), "{outbox}");
    assert_eq!(daemon.smtp.received().len(), 1);
}

/// A SIGKILLed daemon leaves the rows it claimed reserved for ten minutes; the daemon that
/// starts next on the same host sees their holder is gone and sends them at once.
#[test]
fn claims_of_a_daemon_that_died_are_taken_over_at_once() {
    let mut daemon = PipeDaemon::new(2);
    let mut gone = std::process::Command::new("true").spawn().expect("run true");
    gone.wait().expect("wait for true");
    let holder = format!("pid {} on {} (0000abcd)", gone.id(), postdesk::daemon::host_name());
    let db = rusqlite::Connection::open(daemon.dir.path().join("postdesk.db")).unwrap();
    let claimed = db
        .execute(
            "UPDATE outbox SET claimed_by = ?1, next_attempt_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '+600 seconds')",
            [&holder],
        )
        .unwrap();
    assert_eq!(claimed, 2);
    daemon.start();
    daemon.smtp.wait_received(2, Duration::from_secs(20));
    daemon.wait_for_log("2 acknowledgement(s) claimed by pid", Duration::from_secs(5));
    daemon.stop();
    assert_eq!(daemon.smtp.received_messages().len(), 2, "each once");
}

on_both!(
    one_acknowledgement_per_ticket_and_a_reply_to_it_is_a_follow_up,
    an_auto_responder_cannot_start_a_mail_storm,
    an_smtp_outage_delays_acknowledgements_and_each_is_sent_once,
    a_permanent_failure_is_recorded_with_the_server_reply,
);
