//! The private Dovecot of `dovecot.rs` does what the IMAP tests rely on.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::dovecot::{Dovecot, Options};

const USER: &str = "help@example.com";
const PASSWORD: &str = "secret";
/// Bound on every wait for the server (IDLE notifications alone are held for 500 ms).
const TIMEOUT: Duration = Duration::from_secs(10);

fn message(n: u32) -> Vec<u8> {
    format!(
        "From: Customer {n} <c{n}@example.org>\r\nTo: {USER}\r\nSubject: Help {n}\r\n\
         Message-ID: <m{n}@example.org>\r\n\r\nBody {n}\r\n"
    )
    .into_bytes()
}

/// A bare-bones IMAP client over the plain port; every read is bounded by `TIMEOUT`.
struct Imap<'a> {
    reader: BufReader<TcpStream>,
    server: &'a Dovecot,
}

impl<'a> Imap<'a> {
    fn connect(server: &'a Dovecot) -> (Imap<'a>, String) {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, server.imap_port()))
            .unwrap_or_else(|e| panic!("connect to the plain port: {e}\n{}", server.log()));
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let mut imap = Imap { reader: BufReader::new(stream), server };
        let greeting = imap.line();
        (imap, greeting)
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("the server closed the connection\n{}", self.server.log()),
            Ok(_) => line,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("no line from the server within {TIMEOUT:?}\n{}", self.server.log())
            }
            Err(e) => panic!("read from the server: {e}\n{}", self.server.log()),
        }
    }

    fn send(&mut self, line: &str) {
        let stream = self.reader.get_mut();
        stream.write_all(format!("{line}\r\n").as_bytes()).expect("write to the server");
    }

    /// Sends `a COMMAND` and returns the lines up to and including the tagged answer, which
    /// must be OK.
    fn command(&mut self, command: &str) -> Vec<String> {
        self.send(&format!("a {command}"));
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            let done = line.starts_with("a ");
            lines.push(line);
            if done {
                break;
            }
        }
        assert!(
            lines.last().is_some_and(|l| l.starts_with("a OK")),
            "{command} failed: {lines:?}\n{}",
            self.server.log()
        );
        lines
    }

    fn capabilities(&mut self) -> String {
        self.command("CAPABILITY").into_iter().find(|l| l.starts_with("* CAPABILITY")).expect("a CAPABILITY line")
    }
}

/// `openssl s_client … -brief` with stdin closed: does the TLS handshake (and verification)
/// succeed? Bounded by `TIMEOUT`.
fn s_client(port: u16, ca: &Path, extra: &[&str]) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-CAfile"])
        .arg(ca)
        .args(["-verify_return_error", "-brief"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("openssl s_client {extra:?} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("openssl output");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn dovecot_appends_and_reports_status_and_messages() {
    let server = Dovecot::start(&[(USER, PASSWORD)]);
    for n in 1..=3 {
        server.append(USER, "INBOX", &message(n));
    }
    let status = server.status(USER, "INBOX");
    assert_eq!((status.messages, status.unseen, status.uidnext), (3, 3, 4), "{status:?}");
    assert!(status.uidvalidity > 0);
    assert_eq!(server.messages(USER, "INBOX"), (1..=3).map(message).collect::<Vec<_>>());

    // append creates a nested folder; LF line ends are stored as CRLF.
    assert!(!server.folder_exists(USER, "Tickets/Done"));
    server.append(USER, "Tickets/Done", b"Subject: lf\n\nbody\n");
    assert!(server.folder_exists(USER, "Tickets/Done"));
    assert_eq!(server.messages(USER, "Tickets/Done"), vec![b"Subject: lf\r\n\r\nbody\r\n".to_vec()]);
    assert_eq!(server.status(USER, "Tickets/Done").messages, 1);
}

#[test]
fn dovecot_plain_port_offers_starttls_and_logs_in() {
    let server = Dovecot::start(&[(USER, PASSWORD)]);
    server.append(USER, "INBOX", &message(1));
    let (mut imap, greeting) = Imap::connect(&server);
    assert!(greeting.starts_with("* OK"), "{greeting:?}");
    let caps = imap.capabilities();
    assert!(caps.contains("STARTTLS"), "{caps}");
    imap.command(&format!("LOGIN {USER} {PASSWORD}"));
    let select = imap.command("SELECT INBOX");
    assert!(select.iter().any(|l| l == "* 1 EXISTS\r\n"), "{select:?}");
    imap.command("LOGOUT");
}

#[test]
fn dovecot_without_tls_offers_no_starttls() {
    let server = Dovecot::start_with(&[(USER, PASSWORD)], Options { tls: false, ..Default::default() });
    let (mut imap, greeting) = Imap::connect(&server);
    assert!(greeting.starts_with("* OK"), "{greeting:?}");
    let caps = imap.capabilities();
    assert!(!caps.contains("STARTTLS"), "{caps}");
    // Plain-text LOGIN is allowed (loopback tests only).
    imap.command(&format!("LOGIN {USER} {PASSWORD}"));
    imap.command("LOGOUT");
}

#[test]
fn dovecot_tls_verifies_with_its_ca_only() {
    let server = Dovecot::start(&[(USER, PASSWORD)]);
    let port = server.imaps_port();
    for names in
        [&["-verify_ip", "127.0.0.1"][..], &["-verify_hostname", "localhost"], &["-verify_hostname", "127.0.0.1"]]
    {
        let (ok, out) = s_client(port, &server.ca_file(), names);
        assert!(ok, "TLS with the test CA and {names:?} failed:\n{out}");
        assert!(out.contains("Verification: OK"), "{out}");
    }
    let (ok, out) = s_client(port, &server.other_ca_file(), &[]);
    assert!(!ok, "TLS verification with an unrelated CA succeeded:\n{out}");

    let (ok, out) = s_client(server.imap_port(), &server.ca_file(), &["-starttls", "imap", "-verify_ip", "127.0.0.1"]);
    assert!(ok, "STARTTLS with the test CA failed:\n{out}");
}

#[test]
fn dovecot_delete_and_create_folder_changes_uidvalidity() {
    let server = Dovecot::start(&[(USER, PASSWORD)]);
    server.create_folder(USER, "Archive");
    server.append(USER, "Archive", &message(1));
    let before = server.status(USER, "Archive");
    assert_eq!(before.messages, 1);
    server.delete_folder(USER, "Archive");
    assert!(!server.folder_exists(USER, "Archive"));
    server.create_folder(USER, "Archive");
    let after = server.status(USER, "Archive");
    assert_eq!((after.messages, after.uidnext), (0, 1), "{after:?}");
    assert_ne!(before.uidvalidity, after.uidvalidity);
}

#[test]
fn dovecot_idle_reports_new_mail() {
    let server = Dovecot::start(&[(USER, PASSWORD)]);
    let (mut imap, _) = Imap::connect(&server);
    imap.command(&format!("LOGIN {USER} {PASSWORD}"));
    imap.command("SELECT INBOX");
    imap.send("i IDLE");
    let line = imap.line();
    assert!(line.starts_with("+ "), "{line:?}");
    server.append(USER, "INBOX", &message(1));
    // `line` panics after TIMEOUT without a line.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let line = imap.line();
        if line == "* 1 EXISTS\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "no EXISTS within {TIMEOUT:?}");
    }
    imap.send("DONE");
    // Other untagged lines (such as "* 1 RECENT") may come first.
    loop {
        let line = imap.line();
        if line.starts_with("i ") {
            assert!(line.starts_with("i OK"), "{line:?}");
            break;
        }
        assert!(Instant::now() < deadline, "IDLE did not end within {TIMEOUT:?}");
    }
}

#[test]
fn dovecot_stop_and_restart_keep_data_and_ports() {
    let mut server = Dovecot::start(&[(USER, PASSWORD)]);
    server.append(USER, "INBOX", &message(1));
    let before = server.status(USER, "INBOX");
    let ports = (server.imap_port(), server.imaps_port());
    let (mut imap, _) = Imap::connect(&server);
    imap.command(&format!("LOGIN {USER} {PASSWORD}"));
    let mut session = imap.reader;

    server.stop();
    assert!(
        TcpStream::connect((Ipv4Addr::LOCALHOST, ports.0)).is_err(),
        "the plain port still accepts connections after stop"
    );
    // The logged-in session was killed too.
    let _ = session.get_mut().write_all(b"a NOOP\r\n");
    let mut rest = String::new();
    let closed = matches!(session.read_line(&mut rest), Ok(0) | Err(_));
    assert!(closed, "the session survived stop: {rest:?}");

    server.restart();
    assert_eq!((server.imap_port(), server.imaps_port()), ports);
    assert_eq!(server.status(USER, "INBOX"), before);
    assert_eq!(server.messages(USER, "INBOX"), vec![message(1)]);
    let (_imap, greeting) = Imap::connect(&server);
    assert!(greeting.starts_with("* OK"), "{greeting:?}");
    assert!(server.log().contains("starting up"), "{}", server.log());
}
