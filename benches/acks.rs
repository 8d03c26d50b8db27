//! Acknowledgement benchmark (`scripts/bench-acks`), against a private Dovecot and the
//! test SMTP server (STARTTLS, pooled connections): (1) acknowledgements delivered per
//! second from a backlog of 1,000; (2) arrival-to-acknowledgement latency over 50 trials
//! — a customer's SMTP submission to the acknowledgement delivered into the customer's
//! mailbox — against a bare IDLE client's notification delay in the same run.

#[allow(dead_code)]
#[path = "../tests/it/dovecot.rs"]
mod dovecot;
#[allow(dead_code)]
#[path = "../tests/it/harness.rs"]
mod harness;
#[path = "imap_client.rs"]
mod imap_client;
#[allow(dead_code)]
#[path = "../tests/it/servers.rs"]
mod servers;
#[allow(dead_code)]
#[path = "../tests/it/smtp.rs"]
mod smtp;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dovecot::Dovecot;
use smtp::{DeliverTo, SmtpOptions, SmtpServer};

const HELPDESK: &str = "support@mail.test";
const ALICE: &str = "alice@mail.test";
const PASSWORD: &str = "bench-pw";

fn config(dir: &Path, dovecot: &Dovecot, smtp: &SmtpServer) -> std::path::PathBuf {
    let path = dir.join("postdesk.toml");
    let text = format!(
        "[database]\npath = \"{}\"\n[helpdesk]\naddress = \"{HELPDESK}\"\ninternal_domains = []\n\
         [acknowledgement]\nmax_per_sender_per_day = 100000\nmax_per_domain_per_day = 100000\n\
         [[mailbox]]\nname = \"support\"\naddress = \"{HELPDESK}\"\nhost = \"127.0.0.1\"\nport = {}\nca_file = \"{}\"\n\
         username = \"{HELPDESK}\"\npassword = \"{PASSWORD}\"\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\n",
        dir.join("postdesk.db").display(),
        dovecot.imaps_port(),
        dovecot.ca_file().display(),
        smtp.port(),
        smtp.ca_file().display()
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

fn throughput() {
    let work = tempfile::tempdir().unwrap();
    let dovecot = Dovecot::start(&[(HELPDESK, PASSWORD)]);
    let smtp = SmtpServer::start(SmtpOptions { tls: true, ..SmtpOptions::default() });
    let config = config(work.path(), &dovecot, &smtp);
    let mail = work.path().join("mail");
    std::fs::create_dir(&mail).unwrap();
    for i in 0..1000 {
        let raw = format!(
            "From: Customer {i} <c{i}@customer{}.example>\r\nTo: {HELPDESK}\r\nSubject: Request {i}\r\n\
             Message-ID: <ack-bench-{i}@customer.example>\r\n\r\nPlease help.\r\n",
            i % 50
        );
        std::fs::write(mail.join(format!("{i:04}.eml")), raw).unwrap();
    }
    let queued = postdesk(&config, &["ingest", &mail.display().to_string()]).status().unwrap();
    assert!(queued.success());
    let start = Instant::now();
    let sent = postdesk(&config, &["run", "--once"]).status().unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(sent.success());
    assert_eq!(smtp.received().len(), 1000, "every acknowledgement reached the SMTP server");
    println!(
        "acknowledgements from a backlog of 1000: {:.0}/s ({secs:.2} s, STARTTLS, pooled connections)",
        1000.0 / secs
    );
}

fn latency() {
    let work = tempfile::tempdir().unwrap();
    let dovecot = Dovecot::start(&[(HELPDESK, PASSWORD), (ALICE, PASSWORD)]);
    let smtp = SmtpServer::start(SmtpOptions {
        tls: true,
        deliver_to: Some(DeliverTo::dovecot(&dovecot, "mail.test")),
        ..SmtpOptions::default()
    });
    let config = config(work.path(), &dovecot, &smtp);
    let mut daemon = postdesk(&config, &["run"]).stderr(Stdio::null()).spawn().unwrap();
    let exists = imap_client::idle_watcher(dovecot.imap_port(), ALICE, PASSWORD, "INBOX");
    std::thread::sleep(Duration::from_secs(2)); // the daemon connects and settles into IDLE
    let (mut bare, mut ours) = (Vec::new(), Vec::new());
    let pause = Duration::from_millis(700);
    for trial in 0..50 {
        // Bare: mail straight to Alice, until her IDLE client hears of it.
        while exists.try_recv().is_ok() {}
        let raw = format!("From: bob@elsewhere.example\r\nTo: {ALICE}\r\nSubject: hi {trial}\r\n\r\nHello\r\n");
        let t0 = Instant::now();
        smtp.submit("bob@elsewhere.example", ALICE, raw.as_bytes()).unwrap();
        let seen = exists.recv_timeout(Duration::from_secs(10)).expect("Alice's IDLE client saw the mail");
        bare.push((seen - t0).as_secs_f64() * 1000.0);
        std::thread::sleep(pause);

        // Ours: Alice writes to the helpdesk, until the acknowledgement is in her mailbox.
        let before = smtp.received().len();
        let raw = format!(
            "From: {ALICE}\r\nTo: {HELPDESK}\r\nSubject: Request {trial}\r\nMessage-ID: <lat-{trial}@mail.test>\r\n\r\nHelp\r\n"
        );
        let t0 = Instant::now();
        smtp.submit(ALICE, HELPDESK, raw.as_bytes()).unwrap();
        let deadline = t0 + Duration::from_secs(10);
        while smtp.received().len() < before + 2 {
            assert!(Instant::now() < deadline, "no acknowledgement within 10 s in trial {trial}");
            std::thread::sleep(Duration::from_millis(1));
        }
        ours.push(t0.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(pause);
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let ((mb, pb), (mo, po)) = (imap_client::median_p99(&mut bare), imap_client::median_p99(&mut ours));
    println!("latency over 50 trials:");
    println!("  submission → bare IDLE client notified        median {mb:>5.0} ms  p99 {pb:>5.0} ms");
    println!("  submission → acknowledgement in the mailbox   median {mo:>5.0} ms  p99 {po:>5.0} ms");
    println!("  difference of the medians                     {:>+5.0} ms", mo - mb);
}
