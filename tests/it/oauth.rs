//! OAuth2 sign-in against real parts: the `oidc-provider` test server (`oauth_server.rs`)
//! hands out short-lived tokens, and Dovecot checks them by introspection for XOAUTH2 and
//! OAUTHBEARER. `postdesk oauth login` is driven through the device flow; the daemon
//! renews tokens ahead of expiry, and a revoked sign-in stops every attempt until the
//! next login.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::daemon::{mail, wait_until, Daemon};
use crate::dovecot::{Dovecot, Options};
use crate::harness::Dir;
use crate::oauth_server::OAuthServer;
use crate::postfix::Postfix;

const USER: &str = "support@helpdesk.example";
const PASSWORD: &str = "s3cret-imap-pw";
const CLIENT_SECRET: &str = "postdesk-secret";

/// Dovecot with the helpdesk user, checking OAuth2 tokens at `server`.
fn dovecot(server: &OAuthServer) -> Dovecot {
    Dovecot::start_with(&[(USER, PASSWORD)], Options { oauth2: Some(server.introspection_url()), ..Default::default() })
}

/// A config whose mailbox signs in with `auth` through the provider `test` of `grant`.
fn config(server: &OAuthServer, dovecot: &Dovecot, auth: &str, grant: &str, extra: &str) -> String {
    format!(
        "{}[[mailbox]]\nname = \"support\"\naddress = \"{USER}\"\nhost = \"127.0.0.1\"\nport = {}\n\
         ca_file = \"{}\"\nusername = \"{USER}\"\nauth = \"{auth}\"\noauth2 = \"test\"\npoll_interval_secs = 1\n{extra}",
        server.provider_config("test", grant),
        dovecot.imaps_port(),
        dovecot.ca_file().display()
    )
}

/// `postdesk oauth login test`, approved on the server as `account` once it shows its code.
fn sign_in(dir: &Dir, server: &OAuthServer, account: &str) {
    let mut child = dir
        .command(&["oauth", "login", "test"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn postdesk oauth login");
    let mut shown = String::new();
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let code = loop {
        let Some(Ok(line)) = lines.next() else {
            let mut stderr = String::new();
            let _ = child.stderr.take().expect("piped stderr").read_to_string(&mut stderr);
            panic!("`oauth login` ended without a code:\n{shown}\n{stderr}");
        };
        shown += &line;
        shown.push('\n');
        if let Some(code) = line.split("enter the code ").nth(1) {
            break code.trim().trim_end_matches(')').to_owned();
        }
    };
    server.approve(&code, account);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("`oauth login` did not finish within 30 s of the approval:\n{shown}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(status.success(), "`oauth login` failed ({status}):\n{shown}{}", rest.join("\n"));
    assert!(rest.iter().any(|l| l.starts_with("Signed in")), "{shown}{}", rest.join("\n"));
}

fn count(dir: &Dir, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(dir.path().join("postdesk.db")).expect("open the database");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

fn tickets(dir: &Dir) -> i64 {
    count(dir, "SELECT COUNT(*) FROM tickets")
}

/// The tokens the database holds now, to look for in logs.
fn stored_tokens(dir: &Dir) -> Vec<String> {
    let conn = rusqlite::Connection::open(dir.path().join("postdesk.db")).expect("open the database");
    let mut stmt = conn.prepare("SELECT refresh_token, access_token FROM oauth_tokens").unwrap();
    let rows = stmt.query_map([], |r| Ok([r.get::<_, Option<String>>(0)?, r.get::<_, Option<String>>(1)?])).unwrap();
    rows.flat_map(|r| r.unwrap()).flatten().collect()
}

/// No secret, nor an XOAUTH2 message carrying a token (base64, as sent), is in `log`.
fn assert_absent(log: &str, secrets: &[String]) {
    let sasl = secrets
        .iter()
        .map(|token| crate::service::base64_encode(format!("user={USER}\x01auth=Bearer {token}\x01\x01").as_bytes()));
    let all: Vec<String> = secrets.iter().cloned().chain(sasl).collect();
    for secret in &all {
        assert!(secret.len() >= 8, "a token this short would match by chance: {secret:?}");
        if let Some(at) = log.find(secret.as_str()) {
            let around = &log[log.floor_char_boundary(at.saturating_sub(300))..at];
            panic!("a secret appears in the logs, after:\n{around}");
        }
    }
}

/// The device flow signs the provider in; the mailbox is read with XOAUTH2, then with
/// OAUTHBEARER, and no token or secret reaches a log even at trace level.
#[test]
fn device_sign_in_then_imap_with_xoauth2_and_oauthbearer() {
    let server = OAuthServer::start(3600, USER);
    let dovecot = dovecot(&server);
    let dir = Dir::new(&config(&server, &dovecot, "xoauth2", "refresh_token", ""));

    let before = dir.run(&["oauth", "status"]);
    before.assert_code(1);
    assert!(before.stderr.contains("run `postdesk oauth login test`"), "{}", before.stderr);
    sign_in(&dir, &server, USER);
    let status = dir.json(&["oauth", "status"]);
    assert_eq!(status[0]["state"], "ok", "{status}");
    assert!(status[0]["expires_in"].as_i64().unwrap() > 3000, "{status}");
    assert_eq!(status[0]["used_by"][0], format!("mailbox support ({USER})"));

    let mut logs = String::new();
    for (n, auth) in [(1, "xoauth2"), (2, "oauthbearer")] {
        let text = config(&server, &dovecot, auth, "refresh_token", "");
        std::fs::write(dir.config(), format!("[database]\npath = \"postdesk.db\"\n{text}")).unwrap();
        dovecot.append(USER, "INBOX", &mail(n));
        let mut cmd = dir.command(&["run", "--once"]);
        cmd.env("RUST_LOG", "trace,async_imap::imap_stream=trace");
        let run = crate::harness::run_command(cmd, None);
        run.assert_code(0);
        assert_eq!(tickets(&dir), n as i64, "with {auth}:\n{}", run.stderr);
        logs += &run.stderr;
    }
    let check = dir.run(&["check-config", "--connect"]);
    check.assert_code(0);
    assert!(check.stdout.contains("OAuth2 test: OK"), "{}", check.stdout);
    let mut secrets = stored_tokens(&dir);
    secrets.push(CLIENT_SECRET.to_owned());
    assert_eq!(secrets.len(), 3, "a refresh token, an access token and the client secret");
    assert_absent(&(logs + &check.stdout + &check.stderr), &secrets);
    assert!(server.stats()["introspection"].as_u64().unwrap_or(0) >= 3, "Dovecot checked the tokens itself");
}

/// Tokens that live three seconds: the daemon renews them before they end, mail keeps
/// coming in through IDLE, and a backlog cut by a server restart (a new login with a
/// renewed token) becomes one ticket per message.
#[test]
fn tokens_are_renewed_ahead_of_expiry_through_idle_and_a_backlog() {
    let server = OAuthServer::start(3, USER);
    let mut dovecot = dovecot(&server);
    let dir = Dir::new(&config(&server, &dovecot, "oauthbearer", "refresh_token", ""));
    sign_in(&dir, &server, USER);
    let daemon = Daemon::start(&dir, &[]);
    daemon.wait_for_log("connected to", Duration::from_secs(20));
    let renewed = server.grants("refresh_token");
    wait_until(Duration::from_secs(20), "the daemon renewed the token three times", || {
        server.grants("refresh_token") >= renewed + 3
    });
    dovecot.append(USER, "INBOX", &mail(1));
    wait_until(Duration::from_secs(10), "the mail in IDLE is a ticket", || tickets(&dir) == 1);

    dovecot.append_many(USER, PASSWORD, "INBOX", (2..=400).map(mail));
    wait_until(Duration::from_secs(60), "the backlog is under way", || tickets(&dir) > 20);
    dovecot.restart();
    // Timed out, it says how far the daemon got and what it logged.
    let deadline = Instant::now() + Duration::from_secs(90);
    while tickets(&dir) != 400 {
        if Instant::now() >= deadline {
            panic!("{} of 400 messages are tickets after 90 s; the daemon's log:\n{}", tickets(&dir), daemon.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(count(&dir, "SELECT COUNT(DISTINCT message_id) FROM articles"), 400);
    wait_until(Duration::from_secs(30), "every message is moved out of INBOX", || {
        dovecot.status(USER, "INBOX").messages == 0
    });
    let log = daemon.log();
    assert!(!log.contains("refused"), "no login was refused:\n{log}");
}

/// Reads sd_notify messages until one has `want` in its STATUS=.
fn status_with(socket: &UnixDatagram, want: &str, limit: Duration) -> String {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        assert!(start.elapsed() < limit, "no STATUS= with {want:?} within {limit:?}");
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if let Some(status) = text.lines().find_map(|l| l.strip_prefix("STATUS=")).filter(|s| s.contains(want)) {
                return status.to_owned();
            }
        }
    }
}

fn scrape(port: u16) -> String {
    let (status, body) = crate::servers::http(port, "GET", "/metrics", None);
    assert_eq!(status, 200, "{body}");
    body
}

/// A revoked sign-in: the daemon says so once with the fix, shows it in STATUS=, the
/// metrics, `check-config --connect` and `oauth status`, sends nothing to the provider,
/// Dovecot nor Postfix meanwhile (an acknowledgement waits, its attempts uncounted), and
/// goes on by itself after a new `oauth login`.
#[test]
fn a_revoked_sign_in_needs_sign_in_everywhere_and_recovers() {
    const CUSTOMER: &str = "bob@customer.example";
    let server = OAuthServer::start(2, USER);
    let options = Options { oauth2: Some(server.introspection_url()), mta: true, ..Default::default() };
    let mut dovecot = Dovecot::start_with(&[(USER, PASSWORD), (CUSTOMER, "bob-pw")], options);
    let postfix = Postfix::start(&dovecot, &[]);
    let metrics = crate::servers::free_ports(1)[0];
    let extra = format!(
        "[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         username = \"{USER}\"\nauth = \"xoauth2\"\noauth2 = \"test\"\n",
        postfix.port()
    );
    let dir = Dir::new(&format!("{extra}{}", config(&server, &dovecot, "xoauth2", "refresh_token", "")));
    sign_in(&dir, &server, USER);
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let socket_text = socket_path.display().to_string();
    let daemon = Daemon::start(&dir, &[("NOTIFY_SOCKET", &socket_text), ("WATCHDOG_USEC", "400000")]);
    status_with(&socket, "1/1 mailboxes connected", Duration::from_secs(20));

    server.revoke(USER);
    // The connection up stays up; a new one (after a restart of the server) needs a token.
    wait_until(Duration::from_secs(20), "the renewal was refused", || {
        server.stats()["token_errors"]["invalid_grant"].as_u64().unwrap_or(0) >= 1
    });
    dovecot.restart();
    // Mail piped in meanwhile: its acknowledgement waits for the sign-in.
    let raw = format!(
        "From: Bob <{CUSTOMER}>\r\nTo: {USER}\r\nSubject: Piped\r\nMessage-ID: <piped@customer.example>\r\n\r\nHi\r\n"
    );
    dir.run_with_stdin(&["ingest", "-"], Some(raw.as_bytes())).assert_code(0);
    let status = status_with(&socket, "SMTP needs OAuth sign-in", Duration::from_secs(20));
    assert!(
        status.starts_with("0/1 mailboxes connected, 1 needs OAuth sign-in: test, SMTP needs OAuth sign-in: test"),
        "{status}"
    );
    let text = scrape(metrics);
    for line in [
        "postdesk_mailbox_state{mailbox=\"support\",state=\"needs_sign_in\"} 1",
        "postdesk_mailbox_state{mailbox=\"support\",state=\"connected\"} 0",
        "postdesk_smtp_needs_sign_in 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    assert!(text.lines().any(|l| l.starts_with("postdesk_oauth_token_expiry_seconds{provider=\"test\"} ")), "{text}");
    let check = dir.run(&["check-config", "--connect"]);
    check.assert_code(1);
    assert!(
        check.stdout.contains("OAuth2 test: FAILED: token request refused: invalid_grant")
            && check.stdout.contains("— run `postdesk oauth login test`"),
        "{}",
        check.stdout
    );
    dir.run(&["oauth", "status"]).assert_code(1);

    // No storm: while it waits, nothing reaches the provider, Dovecot or Postfix.
    let logins = || dovecot.log().matches("imap-login:").count();
    let (requests, before, connections) =
        (server.token_requests(), logins(), postfix.log().matches("connect from").count());
    for _ in 0..10 {
        status_with(&socket, "needs OAuth sign-in", Duration::from_secs(5));
    }
    assert_eq!(server.token_requests(), requests, "token requests while waiting for sign-in");
    assert_eq!(logins(), before, "logins while waiting:\n{}", dovecot.log());
    assert_eq!(postfix.log().matches("connect from").count(), connections, "SMTP connections while waiting");
    assert_eq!(count(&dir, "SELECT attempts FROM outbox"), 0, "the acknowledgement waits without attempts");
    let log = daemon.log();
    assert_eq!(log.matches("token renewal refused").count(), 1, "said once:\n{log}");
    assert_eq!(log.matches("waiting for the sign-in").count(), 1, "said once:\n{log}");
    assert_eq!(log.matches("acknowledgements wait in the outbox").count(), 1, "said once:\n{log}");
    assert!(log.contains("run `postdesk oauth login test`"), "{log}");

    sign_in(&dir, &server, USER);
    status_with(&socket, "1/1 mailboxes connected, 1 tickets today", Duration::from_secs(20));
    dovecot.append(USER, "INBOX", &mail(7));
    wait_until(Duration::from_secs(10), "the mail after the new sign-in is a ticket", || tickets(&dir) == 2);
    wait_until(Duration::from_secs(20), "the waiting acknowledgement is delivered", || {
        dovecot.status(CUSTOMER, "INBOX").messages == 1
    });
    dir.run(&["oauth", "status"]).assert_code(0);
}

/// Application access (Microsoft's client credentials): no login, the secret gets the token.
#[test]
fn client_credentials_need_no_sign_in() {
    let server = OAuthServer::start(3600, USER);
    let dovecot = dovecot(&server);
    let dir = Dir::new(&config(&server, &dovecot, "xoauth2", "client_credentials", ""));
    dovecot.append(USER, "INBOX", &mail(1));
    let run = dir.run(&["run", "--once"]);
    run.assert_code(0);
    assert_eq!(tickets(&dir), 1, "{}", run.stderr);
    assert_eq!(server.grants("client_credentials"), 1);
    let login = dir.run(&["oauth", "login", "test"]);
    login.assert_code(64);
    assert!(login.stderr.contains("no login needed"), "{}", login.stderr);
}

/// Acknowledgements submitted to the private Postfix with XOAUTH2, then OAUTHBEARER: Postfix
/// asks Dovecot, which checks the token at the provider; each reaches the customer's
/// mailbox by LMTP.
#[test]
fn acknowledgements_go_out_through_postfix_with_xoauth2_and_oauthbearer() {
    const CUSTOMER: &str = "alice@customer.example";
    let server = OAuthServer::start(3600, USER);
    let options = Options { oauth2: Some(server.introspection_url()), mta: true, ..Default::default() };
    let dovecot = Dovecot::start_with(&[(USER, PASSWORD), (CUSTOMER, "alice-pw")], options);
    let postfix = Postfix::start(&dovecot, &[]);
    let dir = Dir::new(&config(&server, &dovecot, "xoauth2", "refresh_token", ""));
    sign_in(&dir, &server, USER);
    let mut logs = String::new();
    for (n, auth) in [(1, "xoauth2"), (2, "oauthbearer")] {
        let smtp = format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"{USER}\"\nauth = \"{auth}\"\n\
             oauth2 = \"test\"\n",
            postfix.port()
        );
        let text = config(&server, &dovecot, "xoauth2", "refresh_token", "");
        std::fs::write(dir.config(), format!("[database]\npath = \"postdesk.db\"\n{smtp}{text}")).unwrap();
        let raw = format!(
            "From: Alice <{CUSTOMER}>\r\nTo: {USER}\r\nSubject: Help {n}\r\n\
             Message-ID: <smtp-oauth-{n}@customer.example>\r\n\r\nPlease help.\r\n"
        );
        dovecot.append(USER, "INBOX", raw.as_bytes());
        let mut cmd = dir.command(&["run", "--once"]);
        cmd.env("RUST_LOG", "trace");
        let run = crate::harness::run_command(cmd, None);
        run.assert_code(0);
        logs += &run.stderr;
        assert_eq!(count(&dir, "SELECT COUNT(*) FROM outbox WHERE state = 'sent'"), n, "{}", run.stderr);
        wait_until(Duration::from_secs(10), "the acknowledgement is in the customer's mailbox", || {
            dovecot.status(CUSTOMER, "INBOX").messages == n as u32
        });
        let method = format!("sasl_method={}", auth.to_uppercase());
        assert!(postfix.log().contains(&method), "{method}:\n{}", postfix.log());
    }
    let mut secrets = stored_tokens(&dir);
    secrets.push(CLIENT_SECRET.to_owned());
    assert_absent(&logs, &secrets);
}

/// Two daemons on one database renew the same provider's tokens, which the server
/// rotates and whose reuse it punishes by revoking the sign-in: they take turns (a claim
/// in the database), so no refresh token is ever sent twice.
#[test]
fn two_daemons_never_send_a_refresh_token_twice() {
    let server = OAuthServer::start(2, USER);
    let dovecot = dovecot(&server);
    let dir = Dir::new(&config(&server, &dovecot, "xoauth2", "refresh_token", ""));
    sign_in(&dir, &server, USER);
    let daemons = [Daemon::start(&dir, &[]), Daemon::start(&dir, &[])];
    let renewed = server.grants("refresh_token");
    wait_until(Duration::from_secs(30), "the daemons renewed the token eight times", || {
        server.grants("refresh_token") >= renewed + 8
    });
    let errors = &server.stats()["token_errors_by_grant"]["refresh_token"];
    assert!(errors.as_object().is_none_or(|e| e.is_empty()), "refused renewals: {errors}\n{}", server.log());
    dovecot.append(USER, "INBOX", &mail(1));
    wait_until(Duration::from_secs(20), "the mail is a ticket", || tickets(&dir) == 1);
    for daemon in &daemons {
        assert!(!daemon.log().contains("needs sign-in"), "{}", daemon.log());
    }
}
