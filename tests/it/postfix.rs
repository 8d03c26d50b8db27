//! A private Postfix for integration tests: the MTA acknowledgements are submitted to.
//!
//! `Postfix::start(&dovecot, &[("gone@example.com", "550 5.1.1 no such user")])` writes a
//! self-contained instance into a short temporary directory under `/tmp` (its own
//! `main.cf`, `master.cf`, queue and data directories, and a log file) and runs Postfix's
//! `master -c DIR` as a child process. It offers submission on a free port of 127.0.0.1
//! (STARTTLS with the Dovecot's certificate; AUTH required), signing clients in through
//! the Dovecot's auth socket (so the Dovecot's users, and with `oauth2` its XOAUTH2 and
//! OAUTHBEARER tokens, work for SMTP too), and an inbound port without AUTH for mail
//! from loopback (a customer's mail arriving). Every accepted message goes into that
//! Dovecot by LMTP. Recipients in `answers` get that reply at RCPT instead (451 for an
//! outage, 550 for a permanent failure).
//!
//! Needs the Debian packages postfix and dovecot-lmtpd (`scripts/test` installs them),
//! and root, as Postfix does. Facts this relies on (Postfix 3.7):
//! - As root, `-c DIR` needs no `alternate_config_directories`. The queue directory is
//!   root's (0755), its subdirectories `postfix`'s, as `post-install create-missing`
//!   makes them; made here directly (that command takes 0.4 s).
//! - `master` calls setsid() itself: it must not be spawned as a process-group leader
//!   (it would exit at once); its pid is then the group of every Postfix daemon.
//! - A file written less than two seconds ago is read again and again until it "cools
//!   down" (util/load_file.c): the config is back-dated, or a start takes 2 s more.
//! - Nothing chroots; no DNS, no IPv6; no delays on errors; deferred mail is retried
//!   within about a second. The system's Postfix (if any) is never touched.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::dovecot::Dovecot;
use crate::servers::{self, port_accepts, write_file};

const MASTER: &str = "/usr/lib/postfix/sbin/master";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const PACKAGES: &str = "postfix dovecot-lmtpd (scripts/test installs them)";

pub struct Postfix {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    inbound_port: u16,
}

impl Postfix {
    /// An instance delivering into `dovecot` (started with `Options { mta: true, .. }`).
    pub fn start(dovecot: &Dovecot, answers: &[(&str, &str)]) -> Postfix {
        assert!(Path::new(MASTER).is_file(), "{MASTER} is missing: install the Debian packages {PACKAGES}");
        assert!(
            dovecot.socket("auth-postfix").exists() && dovecot.socket("lmtp").exists(),
            "start the Dovecot with Options {{ mta: true, .. }}"
        );
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "the private Postfix runs as root (as in CI: scripts/test)");
        let dir = tempfile::Builder::new().prefix("pd-mta-").tempdir_in("/tmp").expect("a temporary directory");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).expect("chmod the temporary directory");
        let mut postfix = Postfix { dir, child: None, port: 0, inbound_port: 0 };
        postfix.make_queue();
        postfix.set_answers(answers);
        let start = |postfix: &mut Postfix, ports: &[u16]| {
            (postfix.port, postfix.inbound_port) = (ports[0], ports[1]);
            postfix.write_config(dovecot);
            postfix.spawn();
            postfix.wait_ready().inspect_err(|_| postfix.stop())
        };
        servers::start_on_free_ports(&mut postfix, 2, start, Postfix::log);
        postfix
    }

    /// The submission port (STARTTLS offered, AUTH required).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Submits `raw` from `from` to `to` on the inbound port, as another MTA would.
    pub fn receive(&self, from: &str, to: &str, raw: &[u8]) {
        crate::smtp::submit_to(self.inbound_port, from, to, raw).unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
    }

    /// Waits (bounded) until every message accepted so far has left the queue: delivered,
    /// or bounced (and the bounce delivered).
    pub fn settle(&self) {
        let start = Instant::now();
        loop {
            let log = self.log();
            let (accepted, removed) = (log.matches(": message-id=").count(), log.matches(": removed").count());
            if accepted == removed {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{accepted} accepted, {removed} left the queue:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Messages delivered into Dovecot so far.
    pub fn delivered(&self) -> usize {
        self.log().matches("status=sent").count()
    }

    pub fn log(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- Postfix log ({}) ---\n{}--- master's output ---\n{}",
            self.dir.path().display(),
            read("postfix.log"),
            read("master.stderr")
        )
    }

    /// Replaces the RCPT answers for chosen recipients; new connections get them at once.
    pub fn set_answers(&self, answers: &[(&str, &str)]) {
        let table: String = answers.iter().map(|(rcpt, answer)| format!("{rcpt} {answer}\n")).collect();
        let path = self.config_dir().join("recipient_access");
        write_file(&path, table.as_bytes(), 0o644);
        cool_down(&path);
        if let Some(child) = &self.child {
            // What `postfix reload` does: the master starts new smtpd processes, which read it.
            let pid = i32::try_from(child.id()).expect("pid fits in i32");
            // SAFETY: kill(2) on our own child, not reaped yet.
            unsafe { libc::kill(pid, libc::SIGHUP) };
            self.wait_until_log("reload", Duration::from_secs(5));
        }
    }

    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// The queue and data directories, owned as Postfix wants them.
    fn make_queue(&self) {
        let (spool, data) = (self.dir.path().join("spool"), self.dir.path().join("data"));
        fs::create_dir_all(self.config_dir()).expect("create the config directory");
        let dirs = ["active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private"]
            .into_iter()
            .chain(["saved", "trace"])
            .map(|q| (spool.join(q), "postfix", "root", "0700"))
            .chain([
                (spool.join("maildrop"), "postfix", "postdrop", "0730"),
                (spool.join("public"), "postfix", "postdrop", "0710"),
                (spool.join("pid"), "root", "root", "0755"),
                (data, "postfix", "root", "0700"),
            ]);
        fs::create_dir_all(&spool).expect("create the queue directory");
        for (path, user, group, mode) in dirs {
            let out = Command::new("install")
                .args(["-d", "-o", user, "-g", group, "-m", mode])
                .arg(&path)
                .output()
                .expect("run install");
            assert!(out.status.success(), "install -d {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        }
    }

    fn write_config(&self, dovecot: &Dovecot) {
        let dir = self.dir.path().display();
        let name = self.dir.path().file_name().expect("directory name").to_string_lossy();
        let (lmtp, auth) = (dovecot.socket("lmtp"), dovecot.socket("auth-postfix"));
        let (cert, key) = dovecot.certificate();
        let etc = self.config_dir();
        let main = format!(
            "# Written by tests/it/postfix.rs\n\
             compatibility_level = 3.6\n\
             queue_directory = {dir}/spool\n\
             data_directory = {dir}/data\n\
             maillog_file = {dir}/postfix.log\n\
             maillog_file_prefixes = {parent}\n\
             syslog_name = {name}\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             myhostname = mta.postdesk.test\n\
             mydomain = postdesk.test\n\
             mydestination =\n\
             local_transport = error:5.1.1 no local delivery\n\
             relay_domains =\n\
             alias_maps =\n\
             alias_database =\n\
             local_recipient_maps =\n\
             default_transport = lmtp:unix:{lmtp}\n\
             relay_transport = lmtp:unix:{lmtp}\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.1/32\n\
             smtp_dns_support_level = disabled\n\
             lmtp_dns_support_level = disabled\n\
             smtpd_peername_lookup = no\n\
             in_flow_delay = 0\n\
             smtpd_error_sleep_time = 0\n\
             smtpd_soft_error_limit = 1000\n\
             smtpd_hard_error_limit = 1000\n\
             smtpd_junk_command_limit = 1000\n\
             queue_run_delay = 1s\n\
             minimal_backoff_time = 1s\n\
             maximal_backoff_time = 2s\n\
             delay_warning_time = 0\n\
             lmtp_destination_concurrency_limit = 20\n\
             smtpd_sasl_type = dovecot\n\
             smtpd_sasl_path = {auth}\n\
             smtpd_sasl_auth_enable = no\n\
             smtpd_sasl_security_options = noanonymous\n\
             smtpd_tls_security_level = none\n\
             smtpd_tls_cert_file = {cert}\n\
             smtpd_tls_key_file = {key}\n\
             smtpd_recipient_restrictions = check_recipient_access texthash:{etc}/recipient_access, \
                 permit_sasl_authenticated, reject\n\
             biff = no\n\
             # AUTH XOAUTH2 with its token on one line may be longer than the default 2048.\n\
             line_length_limit = 16384\n",
            parent = self.dir.path().parent().expect("a parent directory").display(),
            lmtp = lmtp.display(),
            auth = auth.display(),
            cert = cert.display(),
            key = key.display(),
            etc = etc.display(),
        );
        let submission = format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n  -o syslog_name={name}/submission\n  -o smtpd_sasl_auth_enable=yes\n\
             \x20 -o smtpd_tls_security_level=may\n\
             \x20 -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n\
             \x20 -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n\
             127.0.0.1:{inbound} inet n - n - - smtpd\n  -o syslog_name={name}/inbound\n\
             \x20 -o smtpd_relay_restrictions=permit_mynetworks,reject\n\
             \x20 -o smtpd_recipient_restrictions=permit_mynetworks,reject\n",
            port = self.port,
            inbound = self.inbound_port,
        );
        let services = [
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "lmtp unix - - n - - lmtp",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ];
        let master = format!("{submission}{}\n", services.join("\n"));
        for (file, text) in [("main.cf", main), ("master.cf", master)] {
            let path = etc.join(file);
            write_file(&path, text.as_bytes(), 0o644);
            cool_down(&path);
        }
    }

    fn spawn(&mut self) {
        let stderr = fs::File::create(self.dir.path().join("master.stderr")).expect("create master.stderr");
        // Not a process-group leader: the master makes its own session (see the module).
        let child = Command::new(MASTER)
            .arg("-c")
            .arg(self.config_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("run {MASTER}: {e}"));
        self.child = Some(child);
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let port = self.port;
        let what = format!("Postfix's master (submission on 127.0.0.1:{port})");
        servers::wait_started(&mut self.child, &what, START_TIMEOUT, || port_accepts(port))
    }

    fn wait_until_log(&self, needle: &str, limit: Duration) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            assert!(start.elapsed() < limit, "no {needle:?} in the Postfix log within {limit:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        servers::kill_group(self.child.take());
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Dates a file a minute back, so that Postfix does not wait for it to "cool down".
fn cool_down(path: &Path) {
    let file = fs::File::options().write(true).open(path).expect("open to back-date");
    let past = SystemTime::now() - Duration::from_secs(60);
    file.set_times(fs::FileTimes::new().set_accessed(past).set_modified(past)).expect("back-date the file");
}
