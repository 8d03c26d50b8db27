//! Acknowledgement benchmark (`scripts/bench-acks`), against a private Dovecot and the
//! tests' private Postfix (submission with STARTTLS and AUTH through Dovecot, delivery by
//! LMTP; pooled connections): (1) acknowledgements submitted per second from a backlog
//! of 5,000, and the time until all are in the customer's mailbox; (2) arrival-to-
//! acknowledgement latency over 50 trials — a customer's mail handed to Postfix to the
//! acknowledgement delivered into the customer's mailbox — against the floor of that
//! path in the same run: a bare responder, an IDLE client that hands a reply to the same
//! Postfix the moment it hears of the customer's mail (two deliveries and two IDLE
//! notifications, as for an acknowledgement), and a bare IDLE client's notification
//! delay for one delivery.

#[allow(dead_code)]
#[path = "../tests/it/dovecot.rs"]
mod dovecot;
#[allow(dead_code)]
#[path = "../tests/it/harness.rs"]
mod harness;
#[path = "imap_client.rs"]
mod imap_client;
#[allow(dead_code)]
#[path = "../tests/it/postfix.rs"]
mod postfix;
#[allow(dead_code)]
#[path = "../tests/it/postgres.rs"]
mod postgres;
#[allow(dead_code)]
#[path = "../tests/it/servers.rs"]
mod servers;
#[allow(dead_code)]
#[path = "../tests/it/smtp.rs"]
mod smtp;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dovecot::{Dovecot, Options};
use postfix::Postfix;

const HELPDESK: &str = "support@mail.test";
const ALICE: &str = "alice@mail.test";
/// The bare responder's mailbox.
const RESPONDER: &str = "responder@mail.test";
const PASSWORD: &str = "bench-pw";

/// A Dovecot with the helpdesk and Alice, and a Postfix delivering into it.
fn servers() -> (Postfix, Dovecot) {
    let users = [(HELPDESK, PASSWORD), (ALICE, PASSWORD), (RESPONDER, PASSWORD)];
    let dovecot = Dovecot::start_with(&users, Options { mta: true, ..Options::default() });
    (Postfix::start(&dovecot, &[]), dovecot)
}

fn config(dir: &Path, dovecot: &Dovecot, postfix: &Postfix) -> std::path::PathBuf {
    let path = dir.join("postdesk.toml");
    let text = format!(
        "[database]\npath = \"{}\"\n[helpdesk]\naddress = \"{HELPDESK}\"\ninternal_domains = []\n\
         [acknowledgement]\nmax_per_sender_per_day = 100000\nmax_per_domain_per_day = 100000\n\
         [[mailbox]]\nname = \"support\"\naddress = \"{HELPDESK}\"\nhost = \"127.0.0.1\"\nport = {}\nca_file = \"{ca}\"\n\
         username = \"{HELPDESK}\"\npassword = \"{PASSWORD}\"\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nca_file = \"{ca}\"\n\
         username = \"{HELPDESK}\"\npassword = \"{PASSWORD}\"\n",
        dir.join("postdesk.db").display(),
        dovecot.imaps_port(),
        postfix.port(),
        ca = dovecot.ca_file().display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn postdesk(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_postdesk"));
    cmd.arg("--config").arg(config).args(args).env("RUST_LOG", "warn").stdout(Stdio::null());
    cmd
}

fn main() {
    throughput();
    latency();
}

const BACKLOG: usize = 5000;

fn throughput() {
    let work = tempfile::tempdir().unwrap();
    let (postfix, dovecot) = servers();
    let config = config(work.path(), &dovecot, &postfix);
    let mail = work.path().join("mail");
    std::fs::create_dir(&mail).unwrap();
    for i in 0..BACKLOG {
        let raw = format!(
            "From: Alice <{ALICE}>\r\nTo: {HELPDESK}\r\nSubject: Request {i}\r\n\
             Message-ID: <ack-bench-{i}@mail.test>\r\n\r\nPlease help.\r\n"
        );
        std::fs::write(mail.join(format!("{i:04}.eml")), raw).unwrap();
    }
    let queued = postdesk(&config, &["ingest", &mail.display().to_string()]).status().unwrap();
    assert!(queued.success());
    let start = Instant::now();
    let sent = postdesk(&config, &["run", "--once"]).status().unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(sent.success());
    postfix.settle();
    let delivered = start.elapsed().as_secs_f64();
    assert_eq!(dovecot.status(ALICE, "INBOX").messages as usize, BACKLOG, "every acknowledgement was delivered");
    println!(
        "acknowledgements from a backlog of {BACKLOG}: {:.0}/s submitted to Postfix ({secs:.2} s, STARTTLS, AUTH, \
         pooled connections); all in the mailbox after {delivered:.2} s",
        BACKLOG as f64 / secs
    );
}

fn latency() {
    let work = tempfile::tempdir().unwrap();
    let (postfix, dovecot) = servers();
    let config = config(work.path(), &dovecot, &postfix);
    let mut daemon = postdesk(&config, &["run"]).stderr(Stdio::null()).spawn().unwrap();
    let exists = imap_client::idle_watcher(dovecot.imap_port(), ALICE, PASSWORD, "INBOX");
    let responder = imap_client::idle_watcher(dovecot.imap_port(), RESPONDER, PASSWORD, "INBOX");
    std::thread::sleep(Duration::from_secs(2)); // the daemon connects and settles into IDLE
    let (mut bare, mut responded, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    let pause = Duration::from_millis(700);
    let wait = |events: &std::sync::mpsc::Receiver<Instant>, what: &str| {
        events.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("{what} within 10 s"))
    };
    for trial in 0..50 {
        // Bare: mail straight to Alice, until her IDLE client hears of it.
        while exists.try_recv().is_ok() {}
        let raw = format!("From: bob@elsewhere.example\r\nTo: {ALICE}\r\nSubject: hi {trial}\r\n\r\nHello\r\n");
        let t0 = Instant::now();
        postfix.receive("bob@elsewhere.example", ALICE, raw.as_bytes());
        bare.push((wait(&exists, "Alice's IDLE client saw the mail") - t0).as_secs_f64() * 1000.0);
        std::thread::sleep(pause);

        // The bare responder: Alice writes to it; told by IDLE, it answers at once.
        while exists.try_recv().is_ok() {}
        let raw = format!("From: {ALICE}\r\nTo: {RESPONDER}\r\nSubject: Question {trial}\r\n\r\nHelp\r\n");
        let t0 = Instant::now();
        postfix.receive(ALICE, RESPONDER, raw.as_bytes());
        wait(&responder, "the responder's IDLE client saw the mail");
        let reply = format!("From: {RESPONDER}\r\nTo: {ALICE}\r\nSubject: Re: Question {trial}\r\n\r\nNoted\r\n");
        postfix.receive(RESPONDER, ALICE, reply.as_bytes());
        responded.push((wait(&exists, "the reply reached Alice's mailbox") - t0).as_secs_f64() * 1000.0);
        std::thread::sleep(pause);

        // Ours: Alice writes to the helpdesk, until the acknowledgement is in her mailbox.
        while exists.try_recv().is_ok() {}
        let raw = format!(
            "From: {ALICE}\r\nTo: {HELPDESK}\r\nSubject: Request {trial}\r\nMessage-ID: <lat-{trial}@mail.test>\r\n\r\nHelp\r\n"
        );
        let t0 = Instant::now();
        postfix.receive(ALICE, HELPDESK, raw.as_bytes());
        ours.push((wait(&exists, "the acknowledgement reached Alice's mailbox") - t0).as_secs_f64() * 1000.0);
        std::thread::sleep(pause);
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let (mb, pb) = imap_client::median_p99(&mut bare);
    let (mr, pr) = imap_client::median_p99(&mut responded);
    let (mo, po) = imap_client::median_p99(&mut ours);
    println!("latency over 50 trials, through Postfix:");
    println!("  mail handed to Postfix → bare IDLE client notified      median {mb:>5.0} ms  p99 {pb:>5.0} ms");
    println!("  mail handed to Postfix → bare responder's reply notified median {mr:>5.0} ms  p99 {pr:>5.0} ms");
    println!("  mail handed to Postfix → acknowledgement notified        median {mo:>5.0} ms  p99 {po:>5.0} ms");
    println!("  postdesk against the bare responder (same path)          {:>+5.0} ms", mo - mr);
}
