//! A private PostgreSQL for one test: `initdb` into a temp dir, the server as our child
//! on a free port of 127.0.0.1 (TLS with the test CA, passwords checked with
//! SCRAM-SHA-256), a database per use, stopped on drop. As root (CI) the server runs as
//! the `postgres` user, which refuses to run as root.

use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::servers::{self, kill_group, make_certificates, start_on_free_ports, wait_started, write_file};

/// The user postdesk signs in as, and its password.
pub const USER: &str = "postdesk";
pub const PASSWORD: &str = "pg-test-secret";

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    /// The uid the server runs as, when the tests run as root.
    run_as: Option<(u32, u32)>,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("postdesk-pg").tempdir().expect("a temp dir");
        let run_as = server_user();
        if let Some((uid, gid)) = run_as {
            chown(dir.path(), Some(uid), Some(gid)).expect("chown the server's dir");
        }
        let mut pg = Postgres { dir, bin, port: 0, child: None, run_as };
        pg.init();
        start_on_free_ports(&mut pg, 1, |pg, ports| pg.run(ports[0]), Postgres::log);
        pg
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        cmd.env_remove("PGPASSWORD").env_remove("PGHOST").env_remove("PGPORT").env_remove("PGDATABASE");
        cmd
    }

    fn own(&self, path: &Path) {
        if let Some((uid, gid)) = self.run_as {
            chown(path, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }

    fn init(&self) {
        let pwfile = self.path("initdb-password");
        write_file(&pwfile, PASSWORD.as_bytes(), 0o600);
        self.own(&pwfile);
        let certs = self.path("certs");
        std::fs::create_dir(&certs).expect("certs dir");
        make_certificates(&certs);
        for name in ["server.pem", "server.key"] {
            self.own(&certs.join(name));
        }
        let out = self
            .command("initdb")
            .args(["-D", &self.path("data").display().to_string(), "-U", USER, "-E", "UTF8", "--locale=C.UTF-8"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Starts the server on `port` and waits until it accepts connections.
    fn run(&mut self, port: u16) -> Result<(), String> {
        let certs = self.path("certs");
        let log = std::fs::File::create(self.path("server.log")).expect("server log");
        self.own(&self.path("server.log"));
        let settings = [
            "listen_addresses=127.0.0.1".to_owned(),
            format!("unix_socket_directories={}", self.dir.path().display()),
            "ssl=on".to_owned(),
            format!("ssl_cert_file={}", certs.join("server.pem").display()),
            format!("ssl_key_file={}", certs.join("server.key").display()),
            "max_connections=100".to_owned(),
            "log_min_messages=warning".to_owned(),
        ];
        let mut cmd = self.command("postgres");
        cmd.args(["-D", &self.path("data").display().to_string(), "-p", &port.to_string()]);
        for setting in &settings {
            cmd.args(["-c", setting]);
        }
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let child = cmd.stdin(Stdio::null()).stdout(log.try_clone().expect("log")).stderr(log).spawn();
        self.child = Some(child.map_err(|e| format!("start postgres: {e}"))?);
        self.port = port;
        // Accepting connections is not yet taking them: until recovery ends it answers
        // "the database system is starting up". `pg_isready` says when it takes them.
        let (isready, socket_dir) = (self.bin.join("pg_isready"), self.dir.path().display().to_string());
        wait_started(&mut self.child, "postgres", Duration::from_secs(30), || {
            servers::port_accepts(port)
                && Command::new(&isready)
                    .args(["-q", "-h", &socket_dir, "-p", &port.to_string(), "-U", USER])
                    .status()
                    .is_ok_and(|s| s.success())
        })
    }

    /// Stops the server at once (SIGKILL, as a crashed machine would).
    pub fn kill(&mut self) {
        kill_group(self.child.take());
    }

    /// Starts the server again, on the same port.
    pub fn start_again(&mut self) {
        let port = self.port;
        self.run(port).unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("server.log")).unwrap_or_default()
    }

    /// A new empty database: its name.
    pub fn database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("postdesk_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// The URL of database `name`, for postdesk (by TCP, with TLS or not as the
    /// configuration says).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `sql` in `database` as the superuser over the Unix socket; its output.
    pub fn sql(&self, database: &str, sql: &str) -> String {
        self.try_sql(database, sql).unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
    }

    /// `sql`, or what psql said when it failed.
    pub fn try_sql(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", &self.dir.path().display().to_string(), "-p", &self.port.to_string(), "-U", USER])
            .args(["-d", database, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env_remove("PGPASSWORD")
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }

    /// The `[database]` section for database `name` of this server: the password in a
    /// file, TLS verified against the test CA.
    pub fn config(&self, name: &str) -> String {
        let url = self.url(name);
        let password = self.path("client-password");
        if !password.exists() {
            write_file(&password, PASSWORD.as_bytes(), 0o600);
        }
        format!(
            "[database]\nurl = \"{url}\"\npassword_file = \"{}\"\nca_file = \"{}\"\n",
            password.display(),
            self.path("certs").join("ca.pem").display()
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        kill_group(self.child.take());
    }
}

/// The server binaries: Debian keeps them in /usr/lib/postgresql/VERSION/bin.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().map(|d| d.path().join("bin")).filter(|b| b.join("postgres").is_file()).collect())
        .unwrap_or_default();
    found.sort_by_key(|b| b.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()));
    found.pop().unwrap_or_else(|| {
        panic!("no PostgreSQL server in /usr/lib/postgresql/*/bin; install the Debian package postgresql")
    })
}

/// As root, the `postgres` user's ids (PostgreSQL refuses to run as root).
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("no postgres user: install the Debian package postgresql, which creates it");
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().expect("uid"), fields[3].parse().expect("gid")))
}
