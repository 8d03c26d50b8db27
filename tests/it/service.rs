//! Running as a service: the systemd unit, sd_notify and the watchdog, secrets kept out of
//! the logs, and the metrics endpoint.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::dovecot::Dovecot;
use crate::harness::{repo_path, Dir};
use crate::servers::free_ports;
use crate::smtp::{DeliverTo, SmtpOptions, SmtpServer};

const USER: &str = "support@helpdesk.example";
const IMAP_PASSWORD: &str = "imap-Very-Secret-41";
const SMTP_PASSWORD: &str = "smtp-Very-Secret-42";

fn systemd_analyze(args: &[&str]) -> (bool, String) {
    let out = Command::new("systemd-analyze").args(args).output().expect("systemd-analyze (Debian package systemd)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_unit_file_is_hardened_and_valid() {
    let unit = repo_path("systemd/postdesk.service");
    let (_, report) = systemd_analyze(&["security", "--offline=true", &unit.display().to_string()]);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("exposure level for postdesk.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(exposure <= 1.5, "exposure {exposure} > 1.5:\n{report}");

    // verify insists that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string(&unit).unwrap().replace("/usr/local/bin/postdesk", env!("CARGO_BIN_EXE_postdesk"));
    let copy = dir.path().join("postdesk.service");
    std::fs::write(&copy, text).unwrap();
    let (ok, output) = systemd_analyze(&["verify", &copy.display().to_string()]);
    assert!(ok && output.trim().is_empty(), "systemd-analyze verify:\n{output}");

    // The same unit with the drop-in for MTA delivery (a fixed user) is valid too.
    let drop_in = dir.path().join("postdesk.service.d");
    std::fs::create_dir(&drop_in).unwrap();
    std::fs::copy(repo_path("systemd/postdesk-fixed-user.conf"), drop_in.join("fixed-user.conf")).unwrap();
    let (ok, output) = systemd_analyze(&["verify", &copy.display().to_string()]);
    assert!(ok && output.trim().is_empty(), "systemd-analyze verify with the drop-in:\n{output}");

    // And with the drop-in for PostgreSQL (its password as a credential).
    std::fs::copy(repo_path("systemd/postdesk-postgresql.conf"), drop_in.join("postgresql.conf")).unwrap();
    let (ok, output) = systemd_analyze(&["verify", &copy.display().to_string()]);
    assert!(ok && output.trim().is_empty(), "systemd-analyze verify with the PostgreSQL drop-in:\n{output}");
}

fn mailbox_config(dovecot: &Dovecot, extra: &str) -> String {
    format!(
        "[[mailbox]]\nname = \"support\"\naddress = \"{USER}\"\nhost = \"127.0.0.1\"\nport = {}\nca_file = \"{}\"\n\
         username = \"{USER}\"\npassword = \"{IMAP_PASSWORD}\"\n{extra}",
        dovecot.imaps_port(),
        dovecot.ca_file().display()
    )
}

/// Reads notifications until `want` arrives; every message seen on the way.
fn notifications_until(socket: &UnixDatagram, want: &str, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.iter().any(|m: &String| m.lines().any(|l| l == want)) {
        assert!(start.elapsed() < limit, "no {want} within {limit:?}; got {seen:?}");
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    seen
}

#[test]
fn it_notifies_systemd_pings_the_watchdog_and_says_stopping() {
    let dovecot = Dovecot::start(&[(USER, IMAP_PASSWORD)]);
    let dir = Dir::new(&mailbox_config(&dovecot, ""));
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut cmd = dir.command(&["run"]);
    cmd.env("NOTIFY_SOCKET", &socket_path).env("WATCHDOG_USEC", "400000").stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();

    let seen = notifications_until(&socket, "READY=1", Duration::from_secs(10));
    assert!(!seen.iter().any(|m| m.contains("WATCHDOG=1")), "a watchdog ping before READY: {seen:?}");
    let mut status = Vec::new();
    for _ in 0..3 {
        status = notifications_until(&socket, "WATCHDOG=1", Duration::from_secs(5));
    }
    let text = status.join("\n");
    assert!(text.contains("STATUS=") && text.contains("mailboxes connected"), "{text}");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success(), "kill -TERM");
    notifications_until(&socket, "STOPPING=1", Duration::from_secs(10));
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(0));
}

#[test]
fn passwords_never_reach_the_logs() {
    let dovecot = Dovecot::start(&[(USER, IMAP_PASSWORD)]);
    let smtp = SmtpServer::start(SmtpOptions {
        tls: true,
        auth: Some(("postdesk".to_owned(), SMTP_PASSWORD.to_owned())),
        deliver_to: Some(DeliverTo::dovecot(&dovecot, "helpdesk.example")),
        ..SmtpOptions::default()
    });
    let smtp_config = format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\nusername = \"postdesk\"\n\
         password = \"{SMTP_PASSWORD}\"\n",
        smtp.port(),
        smtp.ca_file().display()
    );
    let dir = Dir::new(&format!("[helpdesk]\ninternal_domains = []\n{}{smtp_config}", mailbox_config(&dovecot, "")));
    dovecot.append(
        USER,
        "INBOX",
        b"From: Cust <cust@customer.example>\r\nSubject: hi\r\nMessage-ID: <r1@c>\r\n\r\nhello\r\n",
    );
    let mut everything = String::new();
    for format in ["human", "json"] {
        let mut cmd = dir.command(&["--log-format", format, "run", "--once"]);
        cmd.env("RUST_LOG", "trace,async_imap::imap_stream=trace");
        let run = crate::harness::run_command(cmd, None);
        run.assert_code(0);
        everything += &run.stderr;
    }
    // A wrong password makes the login fail: its error must not carry the password either.
    let wrong = std::fs::read_to_string(dir.config()).unwrap().replace(IMAP_PASSWORD, "wrong-Secret-43");
    std::fs::write(dir.config(), wrong).unwrap();
    let mut cmd = dir.command(&["run", "--once"]);
    cmd.env("RUST_LOG", "trace,async_imap::imap_stream=trace");
    everything += &crate::harness::run_command(cmd, None).stderr;

    assert!(everything.contains("acknowledgement for ticket"), "the runs did their work:\n{everything}");
    let b64 = |s: &str| {
        let plain = format!("\0postdesk\0{s}");
        base64_encode(plain.as_bytes())
    };
    for secret in [IMAP_PASSWORD.to_owned(), SMTP_PASSWORD.to_owned(), "wrong-Secret-43".to_owned(), b64(SMTP_PASSWORD)]
    {
        if let Some(at) = everything.find(&secret) {
            let around = &everything[everything.floor_char_boundary(at.saturating_sub(300))..at];
            panic!("{secret:?} appears in the logs, after:\n{around}");
        }
    }
}

/// Base64 (RFC 4648), to look for an AUTH PLAIN blob in the logs.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char } else { '=' });
        }
    }
    out
}

fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    response
}

#[test]
fn the_metrics_endpoint_counts_what_happened() {
    let dovecot = Dovecot::start(&[(USER, IMAP_PASSWORD)]);
    let port = free_ports(1)[0];
    let dir = Dir::new(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n{}", mailbox_config(&dovecot, "")));
    let mut child = dir.command(&["run"]).stderr(Stdio::null()).spawn().unwrap();
    dovecot.append(USER, "INBOX", b"From: a@customer.example\r\nSubject: one\r\nMessage-ID: <m1@c>\r\n\r\nx\r\n");
    // The same mail delivered again (another trace header): a duplicate.
    dovecot.append(
        USER,
        "INBOX",
        b"Delivered-To: support@helpdesk.example\r\nFrom: a@customer.example\r\nSubject: one\r\nMessage-ID: <m1@c>\r\n\r\nx\r\n",
    );
    let start = Instant::now();
    let mut text = String::new();
    while !text.contains("postdesk_duplicates_total 1") {
        assert!(start.elapsed() < Duration::from_secs(15), "metrics never counted both messages:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
        text = if TcpStream::connect(("127.0.0.1", port)).is_ok() { scrape(port) } else { String::new() };
    }
    for line in [
        "postdesk_messages_fetched_total 2",
        "postdesk_tickets_created_total 1",
        "postdesk_acknowledgements_queued_total 1",
        "postdesk_mailbox_connected{mailbox=\"support\"} 1",
        "postdesk_outbox_depth 1",
        "postdesk_ingest_latency_seconds_count 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
    }
    assert!(text.contains("postdesk_mailbox_last_poll_timestamp_seconds{mailbox=\"support\"} "), "{text}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn check_config_connect_names_each_endpoint_and_what_failed() {
    let dovecot = Dovecot::start(&[(USER, IMAP_PASSWORD)]);
    let smtp = SmtpServer::start(SmtpOptions { tls: true, ..SmtpOptions::default() });
    let smtp_config = format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\n",
        smtp.port(),
        smtp.ca_file().display()
    );
    let dir = Dir::new(&format!("{}{smtp_config}", mailbox_config(&dovecot, "")));
    let ok = dir.run(&["check-config", "--connect"]);
    ok.assert_code(0);
    assert!(ok.stdout.contains("mailbox support (IMAP 127.0.0.1:") && ok.stdout.contains("): OK"), "{}", ok.stdout);
    assert!(ok.stdout.contains(&format!("SMTP 127.0.0.1:{}: OK", smtp.port())), "{}", ok.stdout);

    let config = std::fs::read_to_string(dir.config()).unwrap();
    std::fs::write(dir.config(), config.replace(IMAP_PASSWORD, "wrong").replace("[smtp]", "folder = \"Nope\"\n[smtp]"))
        .unwrap();
    let bad = dir.run(&["check-config", "--connect"]);
    bad.assert_code(1);
    assert!(bad.stdout.contains("FAILED: authentication: login as support@helpdesk.example refused"), "{}", bad.stdout);
    std::fs::write(dir.config(), config.replace("[smtp]", "folder = \"Nope\"\n[smtp]")).unwrap();
    let folder = dir.run(&["check-config", "--connect"]);
    folder.assert_code(1);
    assert!(folder.stdout.contains("FAILED: folder \"Nope\""), "{}", folder.stdout);
}
