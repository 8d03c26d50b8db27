//! A private Dovecot IMAP server for integration tests.
//!
//! `Dovecot::start(&[("help@example.com", "secret")])` writes a self-contained config into a
//! short temporary directory under `/tmp`, generates a test CA and a server certificate with
//! the `openssl` command line, and runs `dovecot -F -c CONFIG` as a child process listening
//! only on 127.0.0.1 on two free ports: a plain port (offering STARTTLS when TLS is on) and an
//! implicit-TLS port. Mail is added and inspected behind the server's back with
//! `doveadm -c CONFIG …`, which goes through Dovecot's own storage code (no hand-written
//! Maildir files). Everything is std and blocking.
//!
//! Needs the Debian packages dovecot-core and dovecot-imapd (`scripts/test` installs them). A
//! missing `dovecot` makes `start` panic: these tests are never skipped silently.
//!
//! Facts this relies on (Dovecot 2.3):
//! - A private `base_dir`, `state_dir`, `log_path` and a unique `instance_name`, and `-c` on
//!   every `doveadm` call, keep it apart from any system-wide Dovecot (which may or may not
//!   be running on 143/993: nothing here depends on it).
//! - Unix sockets live in `base_dir`; their paths are limited to 108 bytes, hence the short
//!   `/tmp/pd-dove-XXXXXX` directory rather than `$TMPDIR`.
//! - Users: Dovecot refuses to access mail as uid 0. Run as root (the containers), the mail
//!   belongs to the Debian `mail` user (uid 8, from /etc/passwd), so `first_valid_uid` and
//!   `last_valid_uid` are set to exactly that uid; the temporary directory is made 0711 so
//!   that `mail` (and the `dovecot` user running the auth process, which reads the users file)
//!   can traverse it, and only `DIR/mail` is owned by `mail`. The internal and login users
//!   stay Dovecot's defaults, `dovecot` and `dovenull`, which the dovecot-core package
//!   creates. Run as a normal user, everything runs as that user ("rootless" Dovecot):
//!   `mail_uid`, `default_internal_user`, `default_login_user` and `default_internal_group`
//!   are the current user and group, and the login and anvil processes are not chrooted.
//!   Both modes were tried (the normal-user one as `nobody`).
//! - `disable_plaintext_auth = no` allows LOGIN on the plain port; loopback only.
//! - `mail_max_userip_connections = 100`: the default of 10 is too few for parallel clients.
//! - `mail_save_crlf = yes`: messages are stored with CRLF line ends, exactly as IMAP serves
//!   them, so `messages()` returns the bytes a client's `BODY[]` gets.
//! - Stopping kills the whole process group with SIGKILL. Killing only the master would leave
//!   logged-in `imap` processes serving their clients; a SIGTERM shutdown takes ~2 s.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::servers::{self, connect, make_certificates, port_accepts, write_file};

/// How long the server may take to accept connections after being started.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the ports may stay open after the server was killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Debian packages to install when a program is missing.
const PACKAGES: &str = "dovecot-core dovecot-imapd (scripts/test installs them)";

fn find_program(name: &str) -> PathBuf {
    servers::find_program(name, PACKAGES)
}

pub struct Options {
    /// false: no SSL at all, so the plain port does not offer STARTTLS and there is no
    /// implicit-TLS port.
    pub tls: bool,
    /// An OAuth2 introspection URL: XOAUTH2 and OAUTHBEARER are offered too, their
    /// tokens checked there (`oauth_server.rs`), beside the password users.
    pub oauth2: Option<String>,
    /// LMTP and an auth socket for a private Postfix (`postfix.rs`): it delivers here and
    /// signs its submission clients in with these users.
    pub mta: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { tls: true, oauth2: None, mta: false }
    }
}

/// What `doveadm mailbox status` says about one folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub messages: u32,
    pub unseen: u32,
    pub uidvalidity: u32,
    pub uidnext: u32,
}

pub struct Dovecot {
    dir: tempfile::TempDir,
    dovecot: PathBuf,
    doveadm: PathBuf,
    child: Option<Child>,
    imap_port: u16,
    imaps_port: Option<u16>,
}

impl Dovecot {
    /// A server with TLS (STARTTLS on the plain port, and an implicit-TLS port) and these
    /// (login, password) users.
    pub fn start(users: &[(&str, &str)]) -> Dovecot {
        Dovecot::start_with(users, Options::default())
    }

    pub fn start_with(users: &[(&str, &str)], options: Options) -> Dovecot {
        let dovecot = find_program("dovecot");
        let doveadm = find_program("doveadm");
        let dir = tempfile::Builder::new()
            .prefix("pd-dove-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory under /tmp");
        let owner = MailOwner::for_dir(dir.path());
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711))
            .expect("make the temporary directory traversable");
        let mail = dir.path().join("mail");
        fs::create_dir(&mail).expect("create the mail directory");
        std::os::unix::fs::chown(&mail, Some(owner.uid), Some(owner.gid))
            .unwrap_or_else(|e| panic!("chown {} to {}: {e}", mail.display(), owner.uid));
        fs::set_permissions(&mail, fs::Permissions::from_mode(0o700)).expect("chmod mail dir");

        let mut passwd = String::new();
        for (login, password) in users {
            for field in [login, password] {
                assert!(
                    !field.is_empty() && !field.contains([':', '\n', '\r']),
                    "Dovecot test users: {field:?} can't go into a passwd-file"
                );
            }
            // user:password:uid:gid:gecos:home:shell:extra; uid, gid and home come from the config.
            passwd.push_str(&format!("{login}:{{PLAIN}}{password}::::::\n"));
        }
        // 0644: in root mode the auth process reading it runs as the `dovecot` user.
        write_file(&dir.path().join("users"), passwd.as_bytes(), 0o644);
        if options.tls {
            make_certificates(dir.path());
        }

        let mut server = Dovecot { dir, dovecot, doveadm, child: None, imap_port: 0, imaps_port: None };
        let start = |server: &mut Dovecot, ports: &[u16]| {
            server.imap_port = ports[0];
            server.imaps_port = ports.get(1).copied();
            write_file(&server.config_path(), server.config(&owner, &options).as_bytes(), 0o644);
            server.spawn();
            server.wait_ready().inspect_err(|_| server.kill())
        };
        servers::start_on_free_ports(&mut server, if options.tls { 2 } else { 1 }, start, Dovecot::log);
        server
    }

    /// The plain port (offering STARTTLS when TLS is on).
    pub fn imap_port(&self) -> u16 {
        self.imap_port
    }

    /// The implicit-TLS port. Panics for a server started with `tls: false`.
    pub fn imaps_port(&self) -> u16 {
        self.imaps_port.expect("imaps_port: this Dovecot was started with `tls: false`")
    }

    /// PEM of the test CA that signed the server certificate (for 127.0.0.1 and localhost).
    pub fn ca_file(&self) -> PathBuf {
        self.tls_file("ca.pem")
    }

    /// The server certificate and key (signed by `ca_file()`), for another test server.
    pub fn certificate(&self) -> (PathBuf, PathBuf) {
        (self.tls_file("server.pem"), self.tls_file("server.key"))
    }

    /// PEM of an unrelated CA, for "wrong CA" tests.
    pub fn other_ca_file(&self) -> PathBuf {
        self.tls_file("other-ca.pem")
    }

    /// Kills the server (every Dovecot process, so connected clients see the connection
    /// close) and waits until its ports refuse connections. The ports stay ours for `restart`.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.kill();
        let deadline = Instant::now() + STOP_TIMEOUT;
        for port in self.ports() {
            while port_accepts(port) {
                assert!(
                    Instant::now() < deadline,
                    "Dovecot port {port} still accepts connections {STOP_TIMEOUT:?} after the \
                     server was killed\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the server again, on the same ports and with the same data (stopping it first
    /// if it is running).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        if let Err(why) = self.wait_ready() {
            self.kill();
            panic!("{why}\n{}", self.log());
        }
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) every Dovecot process: a server that stops
    /// answering without closing its connections looks like this to a client, as does a
    /// hung host or a half-open connection.
    pub fn freeze(&self, frozen: bool) {
        let pgid = i32::try_from(self.child.as_ref().expect("Dovecot is running").id()).expect("pid fits in i32");
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill(2) has no memory-safety preconditions; the group is our unreaped child's.
        assert_eq!(unsafe { libc::kill(-pgid, signal) }, 0, "kill -{signal} -{pgid}");
    }

    /// Delivers one message (unseen) to `folder`, creating the folder if needed. Dovecot
    /// stores it with CRLF line ends.
    pub fn append(&self, user: &str, folder: &str, raw: &[u8]) {
        if !self.folder_exists(user, folder) {
            let created = self.doveadm(&["mailbox", "create", "-u", user, folder], None);
            // Another thread may have created it meanwhile.
            if !created.status.success() && !self.folder_exists(user, folder) {
                self.fail(&format!("create folder {folder:?} for {user}"), &created);
            }
        }
        self.doveadm_ok(
            &format!("append a message to {folder:?} for {user}"),
            &["save", "-u", user, "-m", folder],
            Some(raw),
        );
    }

    /// The command line that delivers a message on its stdin to a user's INBOX, as
    /// `append(user, "INBOX", raw)` does, with the user's login still to be appended:
    /// `doveadm -c CONFIG save -u`. For an MTA (`smtp.rs`); the server must be running.
    pub fn deliver_command(&self) -> Vec<OsString> {
        vec![
            self.doveadm.clone().into_os_string(),
            "-c".into(),
            self.config_path().into_os_string(),
            "save".into(),
            "-u".into(),
        ]
    }

    /// Appends many messages quickly over one plain IMAP connection (LITERAL+ pipelining),
    /// as a client would; `append` runs doveadm once per message.
    pub fn append_many(&self, user: &str, password: &str, folder: &str, messages: impl IntoIterator<Item = Vec<u8>>) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.imap_port())).expect("connect to Dovecot");
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let expect_ok = |reader: &mut BufReader<TcpStream>, tag: &str| loop {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).unwrap() > 0, "Dovecot closed the connection");
            if line.starts_with(tag) {
                assert!(line.starts_with(&format!("{tag} OK")), "{line}");
                return;
            }
        };
        write!(stream, "l LOGIN \"{user}\" \"{password}\"\r\n").unwrap();
        expect_ok(&mut reader, "l");
        let mut count = 0;
        for (i, raw) in messages.into_iter().enumerate() {
            write!(stream, "a{i} APPEND \"{folder}\" {{{}+}}\r\n", raw.len()).unwrap();
            stream.write_all(&raw).unwrap();
            stream.write_all(b"\r\n").unwrap();
            count = i + 1;
        }
        for i in 0..count {
            expect_ok(&mut reader, &format!("a{i}"));
        }
        write!(stream, "z LOGOUT\r\n").unwrap();
    }

    pub fn status(&self, user: &str, folder: &str) -> Status {
        let what = format!("status of {folder:?} for {user}");
        let out = self.doveadm_ok(
            &what,
            &["-f", "json", "mailbox", "status", "-u", user, "messages unseen uidvalidity uidnext", folder],
            None,
        );
        let rows = json_rows(&out, &what);
        let row = rows.first().unwrap_or_else(|| panic!("{what}: doveadm printed no row\n{}", self.log()));
        let number = |key: &str| -> u32 {
            row.get(key)
                .and_then(|v| v.as_str())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what}: no number {key:?} in {row}"))
        };
        Status {
            messages: number("messages"),
            unseen: number("unseen"),
            uidvalidity: number("uidvalidity"),
            uidnext: number("uidnext"),
        }
    }

    /// Creates `folder` (and missing parents, hierarchy separator `/`). Panics if it exists.
    pub fn create_folder(&self, user: &str, folder: &str) {
        self.doveadm_ok(
            &format!("create folder {folder:?} for {user}"),
            &["mailbox", "create", "-u", user, folder],
            None,
        );
    }

    /// Deletes `folder` and its messages. Creating it again gives it a new UIDVALIDITY.
    pub fn delete_folder(&self, user: &str, folder: &str) {
        self.doveadm_ok(
            &format!("delete folder {folder:?} for {user}"),
            &["mailbox", "delete", "-u", user, folder],
            None,
        );
    }

    /// Whether `folder` exists and can be selected (a mere parent such as `A` of `A/B`
    /// created alone does not count).
    pub fn folder_exists(&self, user: &str, folder: &str) -> bool {
        let out = self.doveadm(&["mailbox", "status", "-u", user, "messages", folder], None);
        match out.status.code() {
            Some(0) => true,
            Some(68) => false, // DOVEADM_EX_NOTFOUND: "Mailbox doesn't exist"
            _ => self.fail(&format!("check folder {folder:?} for {user}"), &out),
        }
    }

    /// The raw bytes of every message in `folder`, in UID order, as stored (CRLF line ends).
    pub fn messages(&self, user: &str, folder: &str) -> Vec<Vec<u8>> {
        let what = format!("messages in {folder:?} for {user}");
        let out = self.doveadm_ok(&what, &["-f", "json", "fetch", "-u", user, "guid", "mailbox", folder, "all"], None);
        // For Maildir the GUID is the file's base name, before ":2,FLAGS".
        let guids: Vec<String> = json_rows(&out, &what)
            .iter()
            .map(|row| {
                row.get("guid")
                    .and_then(|v| v.as_str())
                    .unwrap_or_else(|| panic!("{what}: no guid in {row}"))
                    .to_owned()
            })
            .collect();
        let out = self.doveadm_ok(&what, &["-f", "json", "mailbox", "path", "-u", user, folder], None);
        let rows = json_rows(&out, &what);
        let maildir = rows
            .first()
            .and_then(|row| row.get("path"))
            .and_then(|v| v.as_str())
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{what}: no path in {}", String::from_utf8_lossy(&out)));
        guids.iter().map(|guid| read_maildir_message(&maildir, guid)).collect()
    }

    /// Dovecot's private log (and anything the master printed before opening it).
    pub fn log(&self) -> String {
        let read = |name: &str| {
            fs::read(self.dir.path().join(name)).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
        };
        let mut log =
            format!("--- Dovecot log ({}) ---\n{}", self.dir.path().join("dovecot.log").display(), read("dovecot.log"));
        let stderr = read("stderr.log");
        if !stderr.trim().is_empty() {
            log.push_str(&format!("--- dovecot -F output ---\n{stderr}"));
        }
        log
    }

    /// Where Dovecot's unix sockets are (`lmtp`, `auth-postfix` with `Options::mta`).
    pub fn socket(&self, name: &str) -> PathBuf {
        self.dir.path().join("run").join(name)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("dovecot.conf")
    }

    fn ports(&self) -> Vec<u16> {
        std::iter::once(self.imap_port).chain(self.imaps_port).collect()
    }

    fn tls_file(&self, name: &str) -> PathBuf {
        assert!(self.imaps_port.is_some(), "{name}: this Dovecot was started with `tls: false`");
        self.dir.path().join(name)
    }

    fn config(&self, owner: &MailOwner, options: &Options) -> String {
        let tls = options.tls;
        let dir = self.dir.path().display();
        let instance = self.dir.path().file_name().expect("temporary directory name").to_string_lossy();
        let mut conf = format!(
            "# Written by tests/it/dovecot.rs\n\
             instance_name = {instance}\n\
             base_dir = {dir}/run\n\
             state_dir = {dir}/state\n\
             log_path = {dir}/dovecot.log\n\
             protocols = imap{lmtp}\n\
             listen = 127.0.0.1\n\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain login{oauth}\n\
             mail_home = {dir}/mail/%u\n\
             mail_location = maildir:~/Maildir\n\
             mail_save_crlf = yes\n\
             mail_max_userip_connections = 100\n\
             mail_uid = {uid}\n\
             mail_gid = {gid}\n\
             first_valid_uid = {uid}\n\
             last_valid_uid = {uid}\n\
             first_valid_gid = {gid}\n\
             last_valid_gid = {gid}\n\
             passdb {{\n  driver = passwd-file\n{password_mechanisms}  args = {dir}/users\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {dir}/users\n}}\n\
             namespace inbox {{\n  inbox = yes\n  separator = /\n}}\n",
            uid = owner.uid,
            gid = owner.gid,
            lmtp = if options.mta { " lmtp" } else { "" },
            oauth = if options.oauth2.is_some() { " xoauth2 oauthbearer" } else { "" },
            password_mechanisms = if options.oauth2.is_some() { "  mechanisms = plain login\n" } else { "" },
        );
        if let Some(url) = &options.oauth2 {
            conf.push_str(&self.oauth2_config(url));
        }
        if options.mta {
            conf.push_str(
                "service lmtp {\n  unix_listener lmtp {\n    mode = 0666\n  }\n}\n\
                 service auth {\n  unix_listener auth-postfix {\n    mode = 0666\n  }\n}\n",
            );
        }
        // Every test client comes from 127.0.0.1: a failed login must not delay the next
        // one (no failure delay, and no per-IP penalty, which grows to 15 s in Dovecot 2.3
        // whatever the delay says and makes Postfix give up on the auth server).
        conf.push_str("auth_failure_delay = 0\n");
        if tls {
            conf.push_str(&format!("ssl = yes\nssl_cert = <{dir}/server.pem\nssl_key = <{dir}/server.key\n"));
        } else {
            conf.push_str("ssl = no\n");
        }
        let chroot = match &owner.rootless {
            Some(rootless) => {
                conf.push_str(&format!(
                    "default_internal_user = {user}\n\
                     default_login_user = {user}\n\
                     default_internal_group = {group}\n",
                    user = rootless.user,
                    group = rootless.group,
                ));
                "  chroot =\n"
            }
            None => "",
        };
        conf.push_str(&format!(
            "service anvil {{\n{chroot}  unix_listener anvil-auth-penalty {{\n    mode = 0\n  }}\n}}\n"
        ));
        // The built-in imap-login service also has an imaps listener on 993: always override
        // it (port 0 disables it).
        conf.push_str(&format!(
            "service imap-login {{\n{chroot}\
             {i}inet_listener imap {{\n{i}{i}address = 127.0.0.1\n{i}{i}port = {imap}\n{i}}}\n\
             {i}inet_listener imaps {{\n{i}{i}address = 127.0.0.1\n{i}{i}port = {imaps}\n\
             {i}{i}ssl = yes\n{i}}}\n\
             }}\n",
            i = "  ",
            imap = self.imap_port,
            imaps = self.imaps_port.unwrap_or(0),
        ));
        conf
    }

    /// The passdb that checks OAuth2 tokens by introspection (RFC 7662), once per login
    /// (no auth cache: a revoked token is refused at once).
    fn oauth2_config(&self, introspection_url: &str) -> String {
        let dir = self.dir.path().display();
        let args = format!(
            "introspection_mode = post\nintrospection_url = {introspection_url}\nforce_introspection = yes\n\
             username_attribute = username\nactive_attribute = active\nactive_value = true\ntimeout_msecs = 5000\n"
        );
        write_file(&self.dir.path().join("oauth2.conf.ext"), args.as_bytes(), 0o644);
        format!(
            "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {dir}/oauth2.conf.ext\n}}\n"
        )
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "Dovecot is already running");
        // A stale pid file whose number was reused would make Dovecot refuse to start.
        let _ = fs::remove_file(self.dir.path().join("run/master.pid"));
        let output = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .expect("open stderr.log");
        let child = Command::new(&self.dovecot)
            .arg("-F")
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("clone stderr.log"))
            .stderr(output)
            // Its own process group, so that `kill` reaches every Dovecot process.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.dovecot.display()));
        self.child = Some(child);
    }

    /// Until the plain port greets with a real "* OK" (not "Waiting for authentication
    /// process") and the TLS port accepts connections.
    fn wait_ready(&mut self) -> Result<(), String> {
        let (imap, imaps) = (self.imap_port, self.imaps_port);
        let what = format!("Dovecot on 127.0.0.1:{:?}", self.ports());
        servers::wait_started(&mut self.child, &what, START_TIMEOUT, || greets(imap) && imaps.is_none_or(port_accepts))
    }

    /// SIGKILL to Dovecot's process group, then reap the master.
    fn kill(&mut self) {
        servers::kill_group(self.child.take());
    }

    fn doveadm(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(&self.doveadm)
            .arg("-c")
            .arg(self.config_path())
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.doveadm.display()));
        if let Some(bytes) = stdin {
            let mut pipe = child.stdin.take().expect("doveadm stdin");
            pipe.write_all(bytes).expect("write to doveadm");
        }
        child.wait_with_output().expect("wait for doveadm")
    }

    fn doveadm_ok(&self, what: &str, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        let out = self.doveadm(args, stdin);
        if !out.status.success() {
            self.fail(what, &out);
        }
        out.stdout
    }

    fn fail(&self, what: &str, out: &Output) -> ! {
        let hint =
            if self.child.is_none() { " (the server is stopped: doveadm needs it for user lookups)" } else { "" };
        panic!(
            "Dovecot test server: {what} failed{hint}: doveadm exited with {}\nstderr:\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        )
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Which uid owns the mail, and for a non-root run the names Dovecot needs for itself.
struct MailOwner {
    uid: u32,
    gid: u32,
    rootless: Option<Rootless>,
}

struct Rootless {
    user: String,
    group: String,
}

impl MailOwner {
    /// `dir` was just created by this process, so its owner is our effective uid and gid.
    fn for_dir(dir: &Path) -> MailOwner {
        let meta = fs::metadata(dir).expect("stat the temporary directory");
        if meta.uid() == 0 {
            let (uid, gid) = passwd_entries()
                .into_iter()
                .find(|(name, _, _)| name == "mail")
                .map(|(_, uid, gid)| (uid, gid))
                .expect("Dovecot test server run as root needs the `mail` user in /etc/passwd");
            return MailOwner { uid, gid, rootless: None };
        }
        let user = passwd_entries()
            .into_iter()
            .find(|(_, uid, _)| *uid == meta.uid())
            .map(|(name, _, _)| name)
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| panic!("no user name for uid {} in /etc/passwd", meta.uid()));
        let group = fs::read_to_string("/etc/group")
            .unwrap_or_default()
            .lines()
            .map(|line| line.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[2].parse() == Ok(meta.gid()))
            .map(|f| f[0].to_owned())
            .unwrap_or_else(|| panic!("no group name for gid {} in /etc/group", meta.gid()));
        MailOwner { uid: meta.uid(), gid: meta.gid(), rootless: Some(Rootless { user, group }) }
    }
}

/// (name, uid, gid) of each line of /etc/passwd.
fn passwd_entries() -> Vec<(String, u32, u32)> {
    fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
        })
        .collect()
}

/// Whether the plain port answers with Dovecot's real greeting.
fn greets(port: u16) -> bool {
    let Some(stream) = connect(port) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok()
        && line.starts_with("* OK")
        && !line.contains("Waiting for authentication")
}

fn json_rows(out: &[u8], what: &str) -> Vec<serde_json::Value> {
    match serde_json::from_slice(out) {
        Ok(serde_json::Value::Array(rows)) => rows,
        _ => panic!("{what}: doveadm printed no JSON array:\n{}", String::from_utf8_lossy(out)),
    }
}

/// The Maildir file whose base name is `guid`, in `new/` or `cur/`. A client may move it
/// from `new/` to `cur/` (or change its flags) while we look, so look a few times.
fn read_maildir_message(maildir: &Path, guid: &str) -> Vec<u8> {
    for _ in 0..5 {
        for sub in ["new", "cur"] {
            let Ok(entries) = fs::read_dir(maildir.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let matches = name.strip_prefix(guid).is_some_and(|rest| rest.is_empty() || rest.starts_with(':'));
                if matches {
                    if let Ok(bytes) = fs::read(entry.path()) {
                        return bytes;
                    }
                }
            }
        }
    }
    panic!("no Maildir file for message {guid} in {}", maildir.display())
}
