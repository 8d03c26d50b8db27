//! A private SMTP server for integration tests.
//!
//! `SmtpServer::start(SmtpOptions { tls, auth, deliver_to })` runs `tests/it/smtp_server.py`
//! (aiosmtpd) with Debian's `/usr/bin/python3` as a child process listening on a free port of
//! 127.0.0.1: plain, or offering STARTTLS and refusing MAIL FROM before it (`tls`), and with
//! AUTH PLAIN/LOGIN required (`auth`). Every accepted message is stored in a temporary
//! directory (`received`), and with `deliver_to` also delivered to a private Dovecot's INBOX
//! for recipients in its local domain. Tests switch the server between accepting, 451 and 550
//! at runtime (`set_mode`). Everything is std and blocking.
//!
//! Needs the Debian packages `python3` and `python3-aiosmtpd` (and `openssl` for `tls`):
//! `start` panics when they are missing; these tests are never skipped silently. The pyenv
//! `python3` that may come first on the PATH does not see Debian's Python packages, hence
//! the absolute path.
//!
//! `submit` is a tiny SMTP client (no TLS, no AUTH). A server started with `tls` or `auth`
//! therefore gets a second, harness-only listener on another port, plain and without AUTH,
//! sharing the mode, the storage and the delivery of the real one; `submit` uses it (and
//! the real port otherwise). Rejected on the real port: `submit_to(server.port(), …)`.
//! That is simpler and sturdier than driving `openssl s_client -starttls smtp` through a
//! dialogue.
//!
//! Facts this relies on (aiosmtpd 1.4, Debian 12):
//! - With a `tls_context`, `require_starttls=True` answers `530 Must issue a STARTTLS command
//!   first` to everything but EHLO/HELO/NOOP/QUIT/STARTTLS before the handshake.
//! - AUTH is offered only over TLS (`auth_require_tls`) when TLS is on; without TLS the
//!   server allows plaintext AUTH (loopback only).
//! - `hostname` is set explicitly: aiosmtpd's default, `socket.getfqdn()`, may wait for DNS.
//! - The script prints `READY <port>` once bound (that is what `start` waits for) and exits 0
//!   on SIGTERM. It is killed with its process group (SIGKILL) when dropped. Its stdin is a
//!   pipe nobody writes to (`--watch-stdin`): should the test binary die without running
//!   `Drop` (an abort, a panic while panicking), the pipe closes and the server exits.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::dovecot::Dovecot;
use crate::harness::repo_path;
use crate::servers::{self, connect, make_certificates, port_accepts};

/// Debian's interpreter, which sees the `python3-aiosmtpd` package.
const PYTHON: &str = "/usr/bin/python3";
/// Debian packages to install when the server cannot run.
const PACKAGES: &str = "python3 python3-aiosmtpd (and openssl for TLS)";
/// How long the server may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Per read or write of `submit`.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct SmtpOptions {
    /// STARTTLS offered, and required before MAIL FROM, with a certificate from `ca_file()`.
    pub tls: bool,
    /// With `tls`: TLS from the first byte (as on port 465) instead of STARTTLS.
    pub implicit_tls: bool,
    /// (login, password) that AUTH PLAIN/LOGIN must give before MAIL FROM.
    pub auth: Option<(String, String)>,
    pub deliver_to: Option<DeliverTo>,
}

/// Local delivery: a command run once per recipient in `local_domain`, with the address as
/// its last argument and the message on stdin. The message is also stored; other
/// recipients' copies are only stored. A failing command makes DATA answer `451 4.3.0 local
/// delivery failed` and nothing is stored.
pub struct DeliverTo {
    command: Vec<OsString>,
    local_domain: String,
}

impl DeliverTo {
    /// Into `dovecot`'s INBOX of the recipient (whose address must be a Dovecot login) with
    /// `doveadm save`. The Dovecot must keep running while the SMTP server receives mail:
    /// create it first so that it is dropped last.
    pub fn dovecot(dovecot: &Dovecot, local_domain: &str) -> DeliverTo {
        DeliverTo { command: dovecot.deliver_command(), local_domain: local_domain.to_owned() }
    }
}

/// What the server answers to RCPT TO and DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Accept,
    /// `451 4.3.0 try again later`
    TempFail,
    /// `550 5.1.1 mailbox unavailable`
    PermFail,
    /// DATA is not answered (the server logs "DATA held") until the mode changes.
    Hold,
}

/// One accepted message with its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// As received: CRLF line ends, dot-unstuffed.
    pub raw: Vec<u8>,
}

pub struct SmtpServer {
    /// `server.log`, the certificates, and `out/` (messages and the mode file).
    dir: tempfile::TempDir,
    options: SmtpOptions,
    child: Option<Child>,
    port: u16,
    /// The harness-only plain listener, when the real one needs TLS or AUTH.
    submit_port: Option<u16>,
}

impl SmtpServer {
    pub fn start(options: SmtpOptions) -> SmtpServer {
        assert!(
            Path::new(PYTHON).is_file(),
            "SMTP test server: {PYTHON} not found; install the Debian packages {PACKAGES}"
        );
        let dir = tempfile::Builder::new().prefix("pd-smtp-").tempdir().expect("create a temporary directory");
        fs::create_dir(dir.path().join("out")).expect("create the message directory");
        if options.tls {
            make_certificates(dir.path());
        }
        let back_door = options.tls || options.auth.is_some();
        let mut server = SmtpServer { dir, options, child: None, port: 0, submit_port: None };
        let start = |server: &mut SmtpServer, ports: &[u16]| {
            server.port = ports[0];
            server.submit_port = ports.get(1).copied();
            server.spawn()
        };
        servers::start_on_free_ports(&mut server, if back_door { 2 } else { 1 }, start, SmtpServer::log);
        server
    }

    /// The real port (plain, or STARTTLS when started with `tls`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// PEM of the test CA that signed the server certificate (for 127.0.0.1 and localhost).
    pub fn ca_file(&self) -> PathBuf {
        self.tls_file("ca.pem")
    }

    /// PEM of an unrelated CA, for "wrong CA" tests.
    pub fn other_ca_file(&self) -> PathBuf {
        self.tls_file("other-ca.pem")
    }

    /// Takes effect at the next RCPT TO or DATA, also on open connections.
    pub fn set_mode(&self, mode: Mode) {
        let word = match mode {
            Mode::Accept => "accept",
            Mode::TempFail => "tempfail",
            Mode::PermFail => "permfail",
            Mode::Hold => "hold",
        };
        // Atomically: the server reads the file at any moment.
        let tmp = self.out_dir().join(".mode.tmp");
        fs::write(&tmp, word).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        fs::rename(&tmp, self.out_dir().join("mode")).expect("rename the mode file into place");
    }

    /// The raw bytes of every accepted message, in order of acceptance.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received_messages().into_iter().map(|m| m.raw).collect()
    }

    /// The Message-ID of every accepted message, in order of acceptance (duplicates kept).
    pub fn received_message_ids(&self) -> Vec<String> {
        self.received_messages()
            .iter()
            .filter_map(|m| {
                let head = String::from_utf8_lossy(&m.raw).split("\r\n\r\n").next().unwrap_or("").to_owned();
                head.lines().find_map(|l| l.strip_prefix("Message-ID: ").map(str::to_owned))
            })
            .collect()
    }

    /// Every accepted message with its envelope, in order of acceptance.
    pub fn received_messages(&self) -> Vec<Received> {
        let out = self.out_dir();
        let mut names: Vec<String> = fs::read_dir(&out)
            .unwrap_or_else(|e| panic!("read {}: {e}", out.display()))
            .map(|entry| entry.expect("read a directory entry").file_name())
            .filter_map(|name| name.into_string().ok())
            .filter(|name| {
                name.strip_suffix(".eml").is_some_and(|n| n.len() == 6 && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect();
        names.sort();
        names
            .iter()
            .map(|name| {
                let read = |name: &str| {
                    let path = out.join(name);
                    fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
                };
                let envelope =
                    String::from_utf8(read(&name.replace(".eml", ".env"))).expect("the envelope file is UTF-8");
                let mut mail_from = None;
                let mut rcpt_to = Vec::new();
                for line in envelope.lines() {
                    let address = |prefix: &str| {
                        line.strip_prefix(prefix).and_then(|rest| rest.strip_suffix('>')).map(str::to_owned)
                    };
                    if let Some(a) = address("MAIL FROM:<") {
                        mail_from = Some(a);
                    } else if let Some(a) = address("RCPT TO:<") {
                        rcpt_to.push(a);
                    } else {
                        panic!("{name}: unexpected envelope line {line:?}");
                    }
                }
                Received {
                    mail_from: mail_from.unwrap_or_else(|| panic!("{name}: no MAIL FROM in {envelope:?}")),
                    rcpt_to,
                    raw: read(name),
                }
            })
            .collect()
    }

    /// Until at least `count` messages were accepted; panics after `timeout`.
    pub fn wait_received(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let received = self.received_messages();
            if received.len() >= count {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "SMTP test server: {} message(s) received within {timeout:?}, expected {count}\n{}",
                received.len(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one message from `from` to `to` with the built-in client, on the harness-only
    /// plain port when the real one needs TLS or AUTH (see the module comment). Line ends
    /// are sent as CRLF. `Err` holds the command and the reply that refused it, such as
    /// `RCPT TO:<a@b>: 550 5.1.1 mailbox unavailable`, or the connection error.
    pub fn submit(&self, from: &str, to: &str, raw: &[u8]) -> Result<(), String> {
        submit_to(self.submit_port.unwrap_or(self.port), from, to, raw)
    }

    /// SIGTERM, then waits (bounded) until the server has exited cleanly and its port
    /// refuses connections. The ports stay ours for `restart`; so do the messages and mode.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = i32::try_from(child.id()).expect("pid fits in i32");
        // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped yet, so
        // its pid cannot have been reused.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait on the SMTP server") {
                break status;
            }
            if Instant::now() > deadline {
                self.child = Some(child);
                self.kill();
                panic!("SMTP test server did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "SMTP test server exited with {status} on SIGTERM\n{}", self.log());
        for port in self.ports() {
            while port_accepts(port) {
                assert!(
                    Instant::now() < deadline,
                    "port {port} still accepts connections after the SMTP test server exited"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the server again on the same ports, with the same messages and mode (stopping
    /// it first if it is running). Message numbering continues.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(why) = self.spawn() {
            panic!("{why}\n{}", self.log());
        }
    }

    /// The server's stderr (aiosmtpd logs every command), across restarts.
    pub fn log(&self) -> String {
        let path = self.dir.path().join("server.log");
        format!(
            "--- SMTP test server log ({}) ---\n{}",
            path.display(),
            fs::read(&path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
        )
    }

    fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn ports(&self) -> Vec<u16> {
        std::iter::once(self.port).chain(self.submit_port).collect()
    }

    fn tls_file(&self, name: &str) -> PathBuf {
        assert!(self.options.tls, "{name}: this SMTP server was started without TLS");
        self.dir.path().join(name)
    }

    fn args(&self) -> Vec<OsString> {
        // `--name=value`: a value starting with `-` is not taken for an option.
        let arg = |name: &str, value: &dyn AsRef<std::ffi::OsStr>| {
            let mut a = OsString::from(format!("--{name}="));
            a.push(value);
            a
        };
        let mut args = vec![
            repo_path("tests/it/smtp_server.py").into_os_string(),
            arg("port", &self.port.to_string()),
            arg("out-dir", &self.out_dir()),
            "--watch-stdin".into(),
        ];
        if self.options.tls {
            args.push(arg("cert", &self.dir.path().join("server.pem")));
            args.push(arg("key", &self.dir.path().join("server.key")));
        }
        if self.options.implicit_tls {
            args.push("--implicit-tls".into());
        }
        if let Some((user, password)) = &self.options.auth {
            args.push(arg("user", user));
            args.push(arg("password", password));
        }
        if let Some(port) = self.submit_port {
            args.push(arg("submit-port", &port.to_string()));
        }
        if let Some(deliver) = &self.options.deliver_to {
            let command: Vec<&str> =
                deliver.command.iter().map(|a| a.to_str().expect("delivery command arguments are UTF-8")).collect();
            let json = serde_json::to_string(&command).expect("JSON of the delivery command");
            args.push(arg("deliver-cmd", &json));
            args.push(arg("local-domain", &deliver.local_domain));
        }
        args
    }

    /// Runs the server and waits for its ready line.
    fn spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "the SMTP test server is already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("open server.log");
        let mut child = Command::new(PYTHON)
            .args(self.args())
            .env("PYTHONUNBUFFERED", "1")
            // Never written to: see `--watch-stdin` in the module comment. `Child` keeps the
            // write end open until the child is reaped.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            // Its own process group, so that `kill` also reaches delivery commands.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("run {PYTHON}: {e}; install the Debian packages {PACKAGES}"));
        // A thread reads stdout so that the wait for the ready line can be bounded.
        let stdout = child.stdout.take().expect("the server's stdout");
        let (lines, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = lines.send(line);
            }
        });
        self.child = Some(child);
        let expected = format!("READY {}", self.port);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match ready.recv_timeout(left) {
                Ok(line) if line == expected => return Ok(()),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.kill();
                    return Err(format!("SMTP test server printed no {expected:?} within {START_TIMEOUT:?}"));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let mut child = self.child.take().expect("the SMTP server child");
                    let status = child.wait().expect("wait for the SMTP server");
                    let hint = if status.code() == Some(3) {
                        format!(" (aiosmtpd missing: install the Debian packages {PACKAGES})")
                    } else {
                        String::new()
                    };
                    return Err(format!("SMTP test server exited while starting ({status}){hint}"));
                }
            }
        }
    }

    /// SIGKILL to the server's process group, then reap it.
    fn kill(&mut self) {
        servers::kill_group(self.child.take());
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends one message to the SMTP server on 127.0.0.1:`port`, plain and without AUTH:
/// EHLO, MAIL FROM, RCPT TO, DATA (line ends made CRLF, dot-stuffed), QUIT. `Err` holds the
/// command and the reply that refused it, or the connection error.
pub fn submit_to(port: u16, from: &str, to: &str, raw: &[u8]) -> Result<(), String> {
    let stream = connect(port).ok_or_else(|| format!("connect to 127.0.0.1:{port} failed"))?;
    let mut client = Client::new(stream)?;
    let result = client.transaction(from, to, raw);
    // Polite but not essential: the message, if accepted, already is.
    let _ = client.command("QUIT", 2);
    result
}

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn new(stream: TcpStream) -> Result<Client, String> {
        let io = |e: std::io::Error| format!("SMTP client: {e}");
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        let mut client = Client { reader: BufReader::new(stream.try_clone().map_err(io)?), writer: stream };
        client.expect("greeting", 2)?;
        Ok(client)
    }

    fn transaction(&mut self, from: &str, to: &str, raw: &[u8]) -> Result<(), String> {
        self.command("EHLO localhost", 2)?;
        self.command(&format!("MAIL FROM:<{from}>"), 2)?;
        self.command(&format!("RCPT TO:<{to}>"), 2)?;
        self.command("DATA", 3)?;
        self.send(&dot_stuffed(raw)).map_err(|e| format!("message data: {e}"))?;
        self.expect("end of data", 2)?;
        Ok(())
    }

    /// Sends `line` and reads the reply, whose code must start with `class`.
    fn command(&mut self, line: &str, class: u8) -> Result<String, String> {
        self.send(format!("{line}\r\n").as_bytes()).map_err(|e| format!("{line}: {e}"))?;
        self.expect(line, class)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.writer.write_all(bytes).map_err(|e| e.to_string())
    }

    /// Reads one (possibly multi-line) reply; `Err("{what}: {reply}")` unless its code
    /// starts with `class`.
    fn expect(&mut self, what: &str, class: u8) -> Result<String, String> {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Err(format!("{what}: connection closed after {reply:?}")),
                Ok(_) => {}
                Err(e) => return Err(format!("{what}: {e} after {reply:?}")),
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let bytes = line.as_bytes();
            if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
                return Err(format!("{what}: not an SMTP reply: {line:?}"));
            }
            if !reply.is_empty() {
                reply.push('\n');
            }
            reply.push_str(line);
            if bytes.get(3) != Some(&b'-') {
                return if bytes[0] == b'0' + class { Ok(reply) } else { Err(format!("{what}: {reply}")) };
            }
        }
    }
}

/// `raw` with CRLF line ends, a `.` doubled at the start of lines, and the final `.` line.
fn dot_stuffed(raw: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(raw.len() + 64);
    let body = raw.strip_suffix(b"\n").unwrap_or(raw);
    if !raw.is_empty() {
        for line in body.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.starts_with(b".") {
                data.push(b'.');
            }
            data.extend_from_slice(line);
            data.extend_from_slice(b"\r\n");
        }
    }
    data.extend_from_slice(b".\r\n");
    data
}
