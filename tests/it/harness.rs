//! A tiny harness: a temporary directory with a config file, and a way to run the real
//! binary in it and look at what it printed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::postgres::Postgres;

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Where a test's tickets are kept: the same test runs on each (`on_both!`).
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A scratch directory holding `postdesk.toml` and the database (or, on PostgreSQL, the
/// server holding it).
pub struct Dir {
    pub tmp: tempfile::TempDir,
    /// The server and the name of the database on it.
    pub postgres: Option<(Postgres, String)>,
}

impl Dir {
    /// A directory whose config adds `extra` TOML to a database path inside it.
    pub fn new(extra: &str) -> Dir {
        Dir::on(Backend::Sqlite, extra)
    }

    /// A directory whose config adds `extra` TOML to a database on `backend`.
    pub fn on(backend: Backend, extra: &str) -> Dir {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (database, postgres) = match backend {
            Backend::Sqlite => (format!("[database]\npath = \"{}\"\n", tmp.path().join("postdesk.db").display()), None),
            Backend::Postgres => {
                let pg = Postgres::start();
                let name = pg.database();
                (pg.config(&name), Some((pg, name)))
            }
        };
        std::fs::write(tmp.path().join("postdesk.toml"), format!("{database}{extra}")).expect("write config");
        Dir { tmp, postgres }
    }

    /// `new`, with an empty database created the way a user creates one: by ingesting
    /// (here, an empty directory).
    pub fn with_database(extra: &str) -> Dir {
        Dir::with_database_on(Backend::Sqlite, extra)
    }

    /// `with_database` on `backend`.
    pub fn with_database_on(backend: Backend, extra: &str) -> Dir {
        let dir = Dir::on(backend, extra);
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).expect("empty dir");
        dir.run(&["ingest", &empty.display().to_string()]).assert_code(0);
        dir
    }

    /// Runs one statement on the database behind postdesk's back (a state no command
    /// makes).
    pub fn sql(&self, statement: &str) {
        match &self.postgres {
            Some((pg, name)) => drop(pg.sql(name, statement)),
            None => {
                let conn = rusqlite::Connection::open(self.path().join("postdesk.db")).expect("open the database");
                conn.execute(statement, []).unwrap_or_else(|e| panic!("{statement}: {e}"));
            }
        }
    }

    /// The number a query of one integer returns, read behind postdesk's back; 0 while
    /// the database does not exist yet.
    pub fn count(&self, query: &str) -> i64 {
        match &self.postgres {
            Some((pg, name)) => match pg.try_sql(name, query) {
                Ok(n) => n.parse().unwrap_or_else(|e| panic!("{query}: {n:?}: {e}")),
                Err(e) if e.contains("does not exist") => 0,
                Err(e) => panic!("{query}: {e}"),
            },
            None => {
                let Ok(conn) = rusqlite::Connection::open(self.path().join("postdesk.db")) else { return 0 };
                conn.busy_timeout(std::time::Duration::from_secs(5)).expect("set a busy timeout");
                conn.query_row(query, [], |r| r.get(0)).unwrap_or(0)
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("postdesk.toml")
    }

    /// `postdesk --config DIR/postdesk.toml ARGS…`
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, None)
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        run_command(self.command(args), stdin)
    }

    /// The command line without running it, to add environment variables.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = postdesk(&[]);
        cmd.arg("--config").arg(self.config()).args(args).current_dir(self.path());
        cmd
    }

    /// `… --json` output parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.push("--json");
        let run = self.run(&args);
        run.assert_code(0);
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed invalid JSON ({e}):\n{}", run.stdout))
    }
}

/// The real binary with `args`, nothing else.
pub fn postdesk(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_postdesk"));
    cmd.args(args);
    cmd
}

pub fn run_command(mut cmd: Command, stdin: Option<&[u8]>) -> Run {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn postdesk");
    if let Some(bytes) = stdin {
        child.stdin.take().expect("stdin").write_all(bytes).expect("write stdin");
    }
    let Output { status, stdout, stderr } = child.wait_with_output().expect("wait for postdesk");
    Run {
        code: status.code().expect("postdesk exited by a signal"),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "exit status\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Standard output lines that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<&str> {
        self.stdout.lines().filter(|l| l.contains(needle)).collect()
    }
}

/// The ticket number in an outcome line such as "x.eml: new ticket N, …".
pub fn ticket_in(line: &str) -> String {
    line.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_digit()))
        .find(|w| w.len() == 16 && w.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no ticket number in {line:?}"))
        .to_owned()
}
