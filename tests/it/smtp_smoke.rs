//! The SMTP test server (`smtp.rs`) itself: receiving, failure modes, STARTTLS, AUTH with
//! postdesk's own SMTP adapter, delivery into a private Dovecot, stop and restart.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use postdesk::config::{Login, SmtpConfig, TlsMode};
use postdesk::core::ack::{Acknowledgement, MailKind};
use postdesk::oauth::Keeper;
use postdesk::secret::{PasswordSource, Secret};
use postdesk::smtp::{Smtp, SmtpError};

use crate::dovecot::{self, Dovecot};
use crate::smtp::{submit_to, DeliverTo, Mode, Received, SmtpOptions, SmtpServer};

/// Bare LF line ends and a line starting with a dot, as a test might write them.
const MESSAGE: &[u8] = b"From: judy@umbrella.example\nTo: help@example.com\n\
Subject: Printer on fire\n\n.dot at the start\nThanks\n";
/// `MESSAGE` as the server stores it.
const MESSAGE_CRLF: &[u8] = b"From: judy@umbrella.example\r\nTo: help@example.com\r\n\
Subject: Printer on fire\r\n\r\n.dot at the start\r\nThanks\r\n";

#[test]
fn smtp_plain_server_stores_submitted_messages_with_envelope() {
    let server = SmtpServer::start(SmtpOptions::default());
    server
        .submit("judy@umbrella.example", "help@example.com", MESSAGE)
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    server.submit("", "second@example.com", b"Subject: 2\r\n\r\nx\r\n").expect("second message");
    assert_eq!(server.received(), vec![MESSAGE_CRLF.to_vec(), b"Subject: 2\r\n\r\nx\r\n".to_vec()]);
    assert_eq!(
        server.received_messages()[0],
        Received {
            mail_from: "judy@umbrella.example".to_owned(),
            rcpt_to: vec!["help@example.com".to_owned()],
            raw: MESSAGE_CRLF.to_vec(),
        }
    );
}

#[test]
fn smtp_modes_switch_at_runtime() {
    let server = SmtpServer::start(SmtpOptions::default());
    server.set_mode(Mode::PermFail);
    let err = server.submit("a@example.org", "b@example.net", MESSAGE).expect_err("refused in PermFail");
    assert_eq!(err, "RCPT TO:<b@example.net>: 550 5.1.1 mailbox unavailable");
    server.set_mode(Mode::TempFail);
    let err = server.submit("a@example.org", "b@example.net", MESSAGE).expect_err("refused in TempFail");
    assert_eq!(err, "RCPT TO:<b@example.net>: 451 4.3.0 try again later");
    server.set_mode(Mode::Accept);
    server.submit("a@example.org", "b@example.net", MESSAGE).expect("accepted again");
    assert_eq!(server.received(), vec![MESSAGE_CRLF.to_vec()]);
}

#[test]
fn smtp_starttls_is_offered_verified_and_required() {
    let server = SmtpServer::start(SmtpOptions { tls: true, ..SmtpOptions::default() });
    let s_client = |ca: &Path| {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-starttls", "smtp", "-connect"])
            .arg(format!("127.0.0.1:{}", server.port()))
            .arg("-CAfile")
            .arg(ca)
            .args(["-verify_return_error", "-brief"]);
        run_bounded(cmd, Duration::from_secs(20))
    };
    let ok = s_client(&server.ca_file());
    assert!(
        ok.status.success(),
        "openssl s_client with the test CA failed ({}):\n{}\n{}",
        ok.status,
        String::from_utf8_lossy(&ok.stderr),
        server.log()
    );
    let wrong = s_client(&server.other_ca_file());
    assert!(
        !wrong.status.success(),
        "openssl s_client accepted the server with an unrelated CA:\n{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let err = submit_to(server.port(), "a@example.org", "b@example.net", MESSAGE)
        .expect_err("plain MAIL FROM on the STARTTLS port");
    assert!(err.starts_with("MAIL FROM:<a@example.org>: 530"), "{err}");
    // The harness-only plain port takes it.
    server.submit("a@example.org", "b@example.net", MESSAGE).expect("submit");
    assert_eq!(server.received(), vec![MESSAGE_CRLF.to_vec()]);
}

#[test]
fn smtp_postdesk_adapter_sends_over_starttls_with_auth() {
    let server = SmtpServer::start(SmtpOptions {
        tls: true,
        auth: Some(("postdesk".to_owned(), "s3cret".to_owned())),
        ..SmtpOptions::default()
    });
    let adapter = |password: &str| {
        let config = SmtpConfig {
            host: "127.0.0.1".to_owned(),
            port: server.port(),
            tls: TlsMode::Starttls,
            ca_file: Some(server.ca_file()),
            credentials: Some(("postdesk".to_owned(), Login::Password(PasswordSource::Inline(Secret::new(password))))),
            give_up_after: chrono::Duration::hours(1),
        };
        Smtp::new(&config, "X-Postdesk-Loop", 2, Keeper::passwords_only()).expect("SMTP adapter")
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    // The adapter's connection pool needs the runtime from its creation to its drop.
    runtime.block_on(async {
        let good = adapter("s3cret");
        let bad = adapter("wrong");
        good.check().await.unwrap_or_else(|e| panic!("check: {e}\n{}", server.log()));
        let err = bad.check().await.expect_err("a wrong password");
        assert!(err.contains("535"), "{err}");

        let sent = good.send(&ack()).await;
        assert!(sent.is_ok(), "{sent:?}");
        server.set_mode(Mode::TempFail);
        let sent = good.send(&ack()).await;
        assert!(matches!(sent, Err(SmtpError::Transient(_))), "{sent:?}");
        server.set_mode(Mode::PermFail);
        let sent = good.send(&ack()).await;
        assert!(matches!(sent, Err(SmtpError::Permanent(_))), "{sent:?}");
    });
    let received = server.received_messages();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].mail_from, "help@example.com");
    assert_eq!(received[0].rcpt_to, ["judy@umbrella.example"]);
    let raw = String::from_utf8_lossy(&received[0].raw);
    assert!(raw.contains("Subject: [Ticket#1] Printer on fire\r\n"), "{raw}");
}

/// Implicit TLS (port 465 style) is the adapter's own code path: TLS from the first byte
/// on a socket it opened, verified against the configured CA; a connection is used again
/// for the next mail.
#[test]
fn smtp_postdesk_adapter_sends_over_implicit_tls() {
    let server = SmtpServer::start(SmtpOptions {
        tls: true,
        implicit_tls: true,
        auth: Some(("postdesk".to_owned(), "s3cret".to_owned())),
        ..SmtpOptions::default()
    });
    let adapter = |ca: PathBuf| {
        let config = SmtpConfig {
            host: "127.0.0.1".to_owned(),
            port: server.port(),
            tls: TlsMode::Implicit,
            ca_file: Some(ca),
            credentials: Some(("postdesk".to_owned(), Login::Password(PasswordSource::Inline(Secret::new("s3cret"))))),
            give_up_after: chrono::Duration::hours(1),
        };
        Smtp::new(&config, "X-Postdesk-Loop", 2, Keeper::passwords_only()).expect("SMTP adapter")
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        let good = adapter(server.ca_file());
        for _ in 0..3 {
            let sent = good.send(&ack()).await;
            assert!(sent.is_ok(), "{sent:?}\n{}", server.log());
        }
        let untrusted = adapter(server.other_ca_file());
        let err = untrusted.check().await.expect_err("a certificate of a CA we do not trust");
        assert!(err.contains("certificate"), "{err}");
    });
    assert_eq!(server.received_messages().len(), 3);
}

/// A server that does not offer STARTTLS gets no mail in clear text from an adapter
/// configured for it.
#[test]
fn smtp_postdesk_adapter_never_drops_starttls() {
    let plain = SmtpServer::start(SmtpOptions::default());
    let config = SmtpConfig {
        host: "127.0.0.1".to_owned(),
        port: plain.port(),
        tls: TlsMode::Starttls,
        ca_file: None,
        credentials: None,
        give_up_after: chrono::Duration::hours(1),
    };
    let adapter = Smtp::new(&config, "X-Postdesk-Loop", 1, Keeper::passwords_only()).expect("SMTP adapter");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let sent = runtime.block_on(adapter.send(&ack()));
    assert!(matches!(&sent, Err(e) if e.to_string().contains("STARTTLS")), "{sent:?}");
    assert!(plain.received().is_empty(), "nothing went out in clear text");
}

#[test]
fn smtp_delivers_local_recipients_into_dovecot() {
    // Declared first, dropped last: the SMTP server runs doveadm against it.
    let dovecot =
        Dovecot::start_with(&[("help@example.com", "secret")], dovecot::Options { tls: false, ..Default::default() });
    let server = SmtpServer::start(SmtpOptions {
        deliver_to: Some(DeliverTo::dovecot(&dovecot, "example.com")),
        ..SmtpOptions::default()
    });
    server
        .submit("judy@umbrella.example", "help@example.com", MESSAGE)
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    // Delivery happens before the server answers DATA: no waiting needed.
    assert_eq!(dovecot.messages("help@example.com", "INBOX"), vec![MESSAGE_CRLF.to_vec()]);
    // Not in the local domain: stored only.
    server.submit("help@example.com", "judy@umbrella.example", MESSAGE).expect("remote recipient");
    assert_eq!(dovecot.status("help@example.com", "INBOX").messages, 1);
    // In the local domain but no such Dovecot user: delivery fails, nothing is stored.
    let err = server.submit("judy@umbrella.example", "nobody@example.com", MESSAGE).expect_err("unknown local user");
    assert_eq!(err, "end of data: 451 4.3.0 local delivery failed");
    assert_eq!(server.received().len(), 2);
}

#[test]
fn smtp_stop_and_restart_keep_port_messages_and_mode() {
    let mut server = SmtpServer::start(SmtpOptions::default());
    let port = server.port();
    server.submit("a@example.org", "b@example.net", b"Subject: 1\r\n\r\n1\r\n").expect("first");
    server.set_mode(Mode::TempFail);
    server.stop();
    let err = server.submit("a@example.org", "b@example.net", MESSAGE).expect_err("stopped");
    assert!(err.starts_with("connect to"), "{err}");
    server.restart();
    assert_eq!(server.port(), port);
    let err = server.submit("a@example.org", "b@example.net", MESSAGE).expect_err("still TempFail");
    assert!(err.contains("451"), "{err}");
    server.set_mode(Mode::Accept);
    server.submit("a@example.org", "b@example.net", b"Subject: 2\r\n\r\n2\r\n").expect("second");
    let received = server.wait_received(2, Duration::from_secs(5));
    let raws: Vec<&[u8]> = received.iter().map(|m| m.raw.as_slice()).collect();
    assert_eq!(raws, [b"Subject: 1\r\n\r\n1\r\n".as_slice(), b"Subject: 2\r\n\r\n2\r\n".as_slice()]);
    // Restarting a running server stops it first.
    server.restart();
    server.submit("a@example.org", "b@example.net", MESSAGE).expect("after a second restart");
}

/// An acknowledgement as the sender hands it to the adapter.
fn ack() -> Acknowledgement {
    Acknowledgement {
        kind: MailKind::Ack,
        to: "judy@umbrella.example".to_owned(),
        to_name: None,
        from: "help@example.com".to_owned(),
        from_name: "Helpdesk".to_owned(),
        subject: "[Ticket#1] Printer on fire".to_owned(),
        body: "We are on it.".to_owned(),
        message_id: "ack.1@example.com".to_owned(),
        in_reply_to: None,
        references: Vec::new(),
    }
}

/// Runs `cmd` with stdin closed; panics if it has not exited after `timeout`.
fn run_bounded(mut cmd: Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    // Drained by threads so that a chatty child cannot block on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: stdout.join().expect("stdout thread"), stderr: stderr.join().expect("stderr thread") }
}
