//! Fault injection (`scripts/chaos`): `postdesk run` against a private Dovecot and the
//! test SMTP server (STARTTLS), each scenario on a fresh database and mailbox, faults
//! injected from outside, then one row of figures per scenario and a consistency check.
//!
//! - `sigkill`: a backlog (`--messages`, 5,000) appended first, then the daemon SIGKILLed
//!   20 times, restarted after each: two thirds at random points of the drain (by ticket
//!   count), the rest at random moments while the acknowledgements go out.
//! - `dovecot-restart`: a stream of new mail (`--stream`, 1,000) while Dovecot is
//!   killed (SIGKILL to all its processes) and started again 5 times.
//! - `full-disk`: the database on a small tmpfs that a dummy file fills while mail
//!   arrives (`--full-seconds`, 30), then the file is removed.
//! - `locked`: `BEGIN EXCLUSIVE` held by another process (Python's sqlite3) for
//!   `--lock-seconds` (60) while mail arrives and acknowledgements fall due (the SMTP
//!   server refused their first attempt with 451 just before).
//!
//! Each scenario then waits (polling, bounded) until the running daemon has emptied the
//! INBOX and has no acknowledgement due, stops it with SIGTERM, runs `postdesk run --once`
//! as a last sweep, and counts: from the mailbox (IMAP), the SMTP server's received mail
//! and the database (read-only). The process exits 1 when a Message-ID put into the
//! mailbox is on no ticket or on more than one, a message is stored twice, INBOX is not
//! empty, or `PRAGMA integrity_check` is not ok. Duplicate and missing acknowledgements
//! are reported, not failed on.
//!
//! Only the command line of `postdesk` is used, and the database is only read.

#[allow(dead_code)]
#[path = "../tests/it/dovecot.rs"]
mod dovecot;
#[allow(dead_code)]
#[path = "../tests/it/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../tests/it/postgres.rs"]
mod postgres;
#[allow(dead_code)]
#[path = "../tests/it/servers.rs"]
mod servers;
#[allow(dead_code)]
#[path = "../tests/it/smtp.rs"]
mod smtp;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dovecot::Dovecot;
use smtp::{SmtpOptions, SmtpServer};

const USER: &str = "support@helpdesk.example";
const PASSWORD: &str = "chaos-pw";
/// Debian's interpreter (the pyenv one on the PATH may lack sqlite3's C module).
const PYTHON: &str = "/usr/bin/python3";
/// How long the running daemon may take to catch up after the last fault. Its IMAP
/// backoff is capped at 5 minutes.
const SETTLE_LIMIT: Duration = Duration::from_secs(360);
/// How long the sigkill scenario waits for the drain to reach a kill's moment.
const DRAIN_KILL_LIMIT: Duration = Duration::from_secs(30);
/// A claimed outbox row whose sender died comes back after 600 s (src/daemon/sender.rs).
const HELD_LIMIT: Duration = Duration::from_secs(700);

const USAGE: &str = "usage: scripts/chaos [sigkill|dovecot-restart|full-disk|locked|all]... [--messages N] \
                     [--kills N] [--stream N] [--restarts N] [--full-seconds S] [--lock-seconds S] [--wait-held] \
                     [--keep]\n\
  --messages N      backlog of the sigkill scenario (5000)\n\
  --kills N         SIGKILLs in the sigkill scenario (20)\n\
  --stream N        mail appended during the dovecot-restart scenario (1000; half of it\n\
                    during the full-disk and locked scenarios)\n\
  --restarts N      Dovecot restarts (5)\n\
  --full-seconds S  how long the disk stays full (30)\n\
  --lock-seconds S  how long the database stays locked (60)\n\
  --wait-held       afterwards, wait (up to ~11 min) for acknowledgements claimed by a\n\
                    killed sender, which come back 10 minutes after their claim\n\
  --keep            keep the scenario directories (logs, database) and print their paths";

struct Options {
    scenarios: Vec<&'static str>,
    messages: usize,
    kills: usize,
    stream: usize,
    restarts: usize,
    full_secs: f64,
    lock_secs: f64,
    wait_held: bool,
    keep: bool,
}

const SCENARIOS: [&str; 4] = ["sigkill", "dovecot-restart", "full-disk", "locked"];

fn parse_args() -> Options {
    let mut o = Options {
        scenarios: Vec::new(),
        messages: 5000,
        kills: 20,
        stream: 1000,
        restarts: 5,
        full_secs: 30.0,
        lock_secs: 60.0,
        wait_held: false,
        keep: false,
    };
    let fail = |why: String| -> ! {
        eprintln!("chaos: {why}\n{USAGE}");
        std::process::exit(64)
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> f64 {
            let v = args.next().unwrap_or_else(|| fail(format!("{name} needs a value")));
            v.parse()
                .ok()
                .filter(|n: &f64| *n > 0.0)
                .unwrap_or_else(|| fail(format!("{name}: not a positive number: {v}")))
        };
        match arg.as_str() {
            // `cargo bench` passes this to every bench target.
            "--bench" => {}
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            "--messages" => o.messages = value("--messages") as usize,
            "--kills" => o.kills = value("--kills") as usize,
            "--stream" => o.stream = (value("--stream") as usize).max(2),
            "--restarts" => o.restarts = value("--restarts") as usize,
            "--full-seconds" => o.full_secs = value("--full-seconds"),
            "--lock-seconds" => o.lock_secs = value("--lock-seconds"),
            "--wait-held" => o.wait_held = true,
            "--keep" => o.keep = true,
            "all" => o.scenarios.extend(SCENARIOS),
            name => match SCENARIOS.iter().find(|s| **s == name) {
                Some(s) => o.scenarios.push(s),
                None => fail(format!("unknown argument {name:?}")),
            },
        }
    }
    if o.scenarios.is_empty() {
        o.scenarios.extend(SCENARIOS);
    }
    o
}

fn main() {
    let options = parse_args();
    let mut done: Vec<(Outcome, Row)> = Vec::new();
    for scenario in &options.scenarios {
        println!("\n=== {scenario} ===");
        let start = Instant::now();
        let mut outcome = match *scenario {
            "sigkill" => sigkill(&options),
            "dovecot-restart" => dovecot_restart(&options),
            "full-disk" => full_disk(&options),
            "locked" => locked(&options),
            _ => unreachable!("parse_args accepts only known scenarios"),
        };
        outcome.world.sweep(&mut outcome.notes);
        let mut row = outcome.figures();
        row.secs = start.elapsed().as_secs_f64();
        println!("{}", row.line());
        done.push((outcome, row));
    }
    if options.wait_held {
        wait_held(&mut done);
    }
    let rows: Vec<Row> = done.into_iter().map(|(_, row)| row).collect();
    println!("\n{}", table(&rows));
    let failed: Vec<&str> = rows.iter().filter(|r| !r.problems.is_empty()).map(|r| r.scenario).collect();
    if failed.is_empty() {
        println!("consistency: every scenario passed (integrity ok, no ticket lost or duplicated, INBOX empty)");
    } else {
        for row in rows.iter().filter(|r| !r.problems.is_empty()) {
            println!("FAILED {}: {}", row.scenario, row.problems.join("; "));
        }
        std::process::exit(1);
    }
}

/// What a scenario leaves for the sweep and the count.
struct Outcome {
    /// Dropped before `_disk`, which holds its database.
    world: World,
    /// Message-IDs whose APPEND was answered OK.
    confirmed: BTreeSet<String>,
    /// Message-IDs whose APPEND was never answered OK: counted when seen.
    uncertain: BTreeSet<String>,
    notes: String,
    /// The full-disk scenario's tmpfs (unmounted first) and its mount point's directory.
    _disk: Option<(Tmpfs, tempfile::TempDir)>,
}

impl Outcome {
    fn figures(&self) -> Row {
        self.world.figures(&self.confirmed, &self.uncertain, self.notes.clone())
    }
}

/// Acknowledgements claimed by a sender that was killed (or could not record them) come
/// back 10 minutes after the claim: one daemon per scenario that has some, all at once,
/// until none is queued (bounded), then the figures again.
fn wait_held(done: &mut [(Outcome, Row)]) {
    let queued = |w: &World| w.count("SELECT COUNT(*) FROM outbox WHERE state = 'queued'");
    let mut waiting: Vec<(&mut Outcome, &mut Row, Daemon)> = done
        .iter_mut()
        .filter(|(outcome, _)| queued(&outcome.world) > 0)
        .map(|(outcome, row)| {
            let daemon = outcome.world.spawn();
            (outcome, row, daemon)
        })
        .collect();
    if waiting.is_empty() {
        return;
    }
    let names: Vec<&str> = waiting.iter().map(|(o, _, _)| o.world.name).collect();
    println!("\nwaiting (up to {HELD_LIMIT:?}) for the acknowledgements held in the outbox of: {}", names.join(", "));
    let start = Instant::now();
    while waiting.iter().any(|(o, _, _)| queued(&o.world) > 0) && start.elapsed() < HELD_LIMIT {
        std::thread::sleep(Duration::from_secs(1));
    }
    for (outcome, row, daemon) in &mut waiting {
        daemon.terminate(Duration::from_secs(30), &outcome.world);
        outcome.notes.push_str(&match queued(&outcome.world) {
            0 => format!("; held acks went out within {:.0} s of waiting", start.elapsed().as_secs_f64()),
            n => format!("; {n} acks still queued after waiting {HELD_LIMIT:?}"),
        });
        let secs = row.secs;
        **row = Row { secs, ..outcome.figures() };
        println!("after the wait: {}", row.line());
    }
}

// --- the scenarios ---------------------------------------------------------------------

fn sigkill(o: &Options) -> Outcome {
    let world = World::new("sigkill", o, None);
    let seeding = Instant::now();
    world.dovecot.append_many(USER, PASSWORD, "INBOX", (0..o.messages).map(message));
    println!("appended {} messages in {:.1} s", o.messages, seeding.elapsed().as_secs_f64());
    let confirmed: BTreeSet<String> = (0..o.messages).map(message_id).collect();
    // Two thirds of the kills fall into the drain: kill k when the ticket count reaches a
    // random point of the k-th slice of the backlog (the drain itself takes a second or
    // two). The others fall at random moments while the acknowledgements go out.
    let drain_kills = (o.kills * 2).div_ceil(3);
    for kill in 1..=o.kills {
        let mut daemon = world.spawn();
        let start = Instant::now();
        let moment = if kill <= drain_kills {
            let slice = o.messages as f64 / drain_kills as f64;
            // At least one more commit than there was at the start, so that each kill
            // interrupts a daemon that is draining.
            let at_start = world.count("SELECT COUNT(*) FROM tickets") as f64 + 1.0;
            let target = (((kill - 1) as f64 + 0.1 + 0.8 * fastrand::f64()) * slice).max(at_start);
            // Timing the fault, not waiting for a result: fine-grained polling, bounded.
            while world.count("SELECT COUNT(*) FROM tickets") < target as i64 && start.elapsed() < DRAIN_KILL_LIMIT {
                std::thread::sleep(Duration::from_millis(2));
            }
            format!("at ticket {target:.0}")
        } else {
            std::thread::sleep(Duration::from_secs_f64(0.2 + fastrand::f64() * 1.6));
            "at random".to_owned()
        };
        daemon.kill();
        println!(
            "kill {kill:>2} {moment:<15} after {:.2} s: {:>5} tickets, {:>5} acknowledgements received, INBOX {}",
            start.elapsed().as_secs_f64(),
            world.count("SELECT COUNT(*) FROM tickets"),
            world.acks(),
            world.inbox()
        );
    }
    let last_kill = Instant::now();
    let mut daemon = world.spawn();
    let recovered = world.settle(&mut daemon, last_kill);
    let notes = format!("{} SIGKILLs; caught up {recovered:.1} s after the last one", o.kills);
    Outcome { world, confirmed, uncertain: BTreeSet::new(), notes, _disk: None }
}

fn dovecot_restart(o: &Options) -> Outcome {
    let mut world = World::new("dovecot-restart", o, None);
    let mut daemon = world.spawn();
    let gap = Duration::from_millis(40);
    let period = gap.as_secs_f64() * o.stream as f64;
    let appender = stream(world.dovecot.imap_port(), 0..o.stream, gap);
    let start = Instant::now();
    let mut last_restart = Instant::now();
    for r in 0..o.restarts {
        // The injected fault: a random moment in each of `restarts` equal slices of the stream.
        let at = (r as f64 + 0.2 + 0.6 * fastrand::f64()) * period / o.restarts as f64;
        std::thread::sleep(Duration::from_secs_f64(at).saturating_sub(start.elapsed()));
        world.dovecot.restart();
        last_restart = Instant::now();
        println!(
            "Dovecot restarted at {:.1} s: {} tickets, INBOX {}",
            start.elapsed().as_secs_f64(),
            world.count("SELECT COUNT(*) FROM tickets"),
            world.inbox()
        );
    }
    let appended = appender.join().expect("the appender thread");
    println!(
        "appended {} messages in {:.1} s ({} APPENDs sent again after a broken connection)",
        o.stream,
        start.elapsed().as_secs_f64(),
        appended.retried
    );
    let recovered = world.settle(&mut daemon, last_restart);
    let notes = format!(
        "{} Dovecot restarts; {} APPENDs sent again; the daemon connected {} times; caught up {recovered:.1} s \
         after the last restart",
        o.restarts,
        appended.retried,
        world.daemon_log().matches(": connected ").count()
    );
    drop(daemon);
    Outcome { world, confirmed: appended.confirmed, uncertain: appended.uncertain, notes, _disk: None }
}

fn full_disk(o: &Options) -> Outcome {
    let base = tempfile::Builder::new().prefix("pd-chaos-disk-").tempdir().expect("temporary directory");
    let disk = Tmpfs::mount(&base.path().join("disk"), 64);
    let world = World::new("full-disk", o, Some(disk.0.clone()));
    let mut daemon = world.spawn();
    let before = 300;
    world.dovecot.append_many(USER, PASSWORD, "INBOX", (0..before).map(message));
    wait_until(Duration::from_secs(120), &format!("the first {before} tickets are committed"), || {
        world.count("SELECT COUNT(*) FROM tickets") >= before as i64 && world.inbox() == 0
    });
    let logins_before = world.dovecot_logins();
    let log_before = world.daemon_log().len();
    let filled = fill(&disk.0.join("filler"));
    let tickets_full = world.count("SELECT COUNT(*) FROM tickets");
    println!(
        "disk filled ({:.1} MB dummy file, {} bytes free): {tickets_full} tickets",
        filled as f64 / 1e6,
        free_bytes(&disk.0)
    );
    let during = o.stream / 2;
    let gap = Duration::from_secs_f64(o.full_secs * 0.8 / during as f64);
    let full_since = Instant::now();
    let appender = stream(world.dovecot.imap_port(), before..before + during, gap);
    let appended = appender.join().expect("the appender thread");
    std::thread::sleep(Duration::from_secs_f64(o.full_secs).saturating_sub(full_since.elapsed()));
    let tickets_freed = world.count("SELECT COUNT(*) FROM tickets");
    let logins_full = world.dovecot_logins() - logins_before;
    let log_full = world.daemon_log()[log_before..].to_owned();
    fs::remove_file(disk.0.join("filler")).expect("remove the dummy file");
    let freed = Instant::now();
    println!(
        "disk freed after {:.1} s full: {tickets_freed} tickets ({} committed while full), INBOX {}; \
         {logins_full} IMAP logins while full",
        full_since.elapsed().as_secs_f64(),
        tickets_freed - tickets_full,
        world.inbox()
    );
    let recovered = world.settle(&mut daemon, freed);
    let notes = format!(
        "{:.0} s full: {} tickets committed meanwhile, {logins_full} IMAP logins, {} daemon log lines \
         mentioning backoff; caught up {recovered:.1} s after space was freed",
        o.full_secs,
        tickets_freed - tickets_full,
        log_full.lines().filter(|l| l.contains("backoff")).count()
    );
    drop(daemon);
    let mut confirmed: BTreeSet<String> = (0..before).map(message_id).collect();
    confirmed.extend(appended.confirmed);
    Outcome { world, confirmed, uncertain: appended.uncertain, notes, _disk: Some((disk, base)) }
}

fn locked(o: &Options) -> Outcome {
    let world = World::new("locked", o, None);
    let mut daemon = world.spawn();
    let before = 300;
    // Acknowledgements fall due while the lock is held: the SMTP server refuses their
    // first attempt (451), which puts them 15-30 s later; then the lock is taken and the
    // server accepts again.
    world.smtp.set_mode(smtp::Mode::TempFail);
    world.dovecot.append_many(USER, PASSWORD, "INBOX", (0..before).map(message));
    let refused = "SELECT COUNT(*) FROM outbox WHERE state = 'queued' AND attempts >= 1";
    wait_until(Duration::from_secs(120), &format!("the first {before} acknowledgements were refused once"), || {
        world.count(refused) >= before as i64
    });
    let mut lock = Lock::take(&world.db, o.lock_secs);
    world.smtp.set_mode(smtp::Mode::Accept);
    let locked_at = Instant::now();
    let (tickets_locked, acks_locked) = (world.count("SELECT COUNT(*) FROM tickets"), world.acks());
    println!(
        "database locked: {tickets_locked} tickets, {} acknowledgements queued for a retry 15-30 s later, {acks_locked} \
         received",
        world.count(refused)
    );
    let during = o.stream / 2;
    let gap = Duration::from_secs_f64(o.lock_secs * 0.8 / during as f64);
    let appended = stream(world.dovecot.imap_port(), before..before + during, gap).join().expect("the appender");
    let (tickets_end, acks_end) = (world.count("SELECT COUNT(*) FROM tickets"), world.acks());
    lock.wait_released(Duration::from_secs_f64(o.lock_secs) + Duration::from_secs(30));
    let released = Instant::now();
    println!(
        "lock released after {:.1} s: {} tickets and {} acknowledgements were added while locked, INBOX {}",
        locked_at.elapsed().as_secs_f64(),
        tickets_end - tickets_locked,
        acks_end - acks_locked,
        world.inbox()
    );
    let recovered = world.settle(&mut daemon, released);
    let notes = format!(
        "{:.0} s BEGIN EXCLUSIVE: {} tickets, {} acknowledgements meanwhile; caught up {recovered:.1} s after release",
        o.lock_secs,
        tickets_end - tickets_locked,
        acks_end - acks_locked
    );
    drop(daemon);
    let mut confirmed: BTreeSet<String> = (0..before).map(message_id).collect();
    confirmed.extend(appended.confirmed);
    Outcome { world, confirmed, uncertain: appended.uncertain, notes, _disk: None }
}

// --- the world: Dovecot, the SMTP server, a config, the daemon ----------------------------

/// Message `i`: a new request (~2 KB) from its own customer, so that every message is a
/// new ticket owed one acknowledgement.
fn message(i: usize) -> Vec<u8> {
    let line = "The VPN drops every few minutes since this morning; rebooting did not help. \r\n";
    format!(
        "From: Customer {i} <customer{i}@company{}.example>\r\nTo: {USER}\r\nSubject: Request {i}: VPN drops\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{}",
        i % 100,
        message_id(i),
        line.repeat(24)
    )
    .into_bytes()
}

fn message_id(i: usize) -> String {
    format!("chaos-{i}@customers.example")
}

struct World {
    name: &'static str,
    /// Config, daemon log (and the database unless it is elsewhere).
    dir: PathBuf,
    /// Removes `dir` when dropped, unless `--keep`.
    _tmp: Option<tempfile::TempDir>,
    db: PathBuf,
    config: PathBuf,
    dovecot: Dovecot,
    smtp: SmtpServer,
}

impl World {
    fn new(name: &'static str, o: &Options, db_dir: Option<PathBuf>) -> World {
        let tmp = tempfile::Builder::new().prefix(&format!("pd-chaos-{name}-")).tempdir().expect("temporary dir");
        let dir = tmp.path().to_owned();
        let tmp = if o.keep {
            println!("keeping {} (config, daemon.log, database)", tmp.keep().display());
            None
        } else {
            Some(tmp)
        };
        let dovecot = Dovecot::start(&[(USER, PASSWORD)]);
        let smtp = SmtpServer::start(SmtpOptions { tls: true, ..SmtpOptions::default() });
        let db = db_dir.unwrap_or_else(|| dir.clone()).join("postdesk.db");
        let config = dir.join("postdesk.toml");
        let text = format!(
            "[database]\npath = \"{}\"\n[helpdesk]\naddress = \"{USER}\"\n\
             [acknowledgement]\nmax_per_sender_per_day = 1000000\nmax_per_domain_per_day = 1000000\n\
             [[mailbox]]\nname = \"support\"\naddress = \"{USER}\"\nhost = \"127.0.0.1\"\nport = {}\n\
             ca_file = \"{}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\nafter = \"move\"\n\
             processed_folder = \"Processed\"\nfailed_folder = \"Failed\"\n\
             [smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\n",
            db.display(),
            dovecot.imaps_port(),
            dovecot.ca_file().display(),
            smtp.port(),
            smtp.ca_file().display()
        );
        fs::write(&config, text).expect("write the config");
        World { name, dir, _tmp: tmp, db, config, dovecot, smtp }
    }

    fn command(&self, args: &[&str]) -> Command {
        let log = fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("open the daemon log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_postdesk"));
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "postdesk=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        cmd
    }

    fn spawn(&self) -> Daemon {
        Daemon(Some(self.command(&["run"]).spawn().expect("spawn postdesk run")))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    fn daemon_log(&self) -> String {
        fs::read(self.log_path()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// The daemon's IMAP logins so far: over TLS (the test's own clients use the plain port).
    fn dovecot_logins(&self) -> usize {
        let login = format!("Login: user=<{USER}>");
        self.dovecot.log().lines().filter(|l| l.contains(&login) && l.contains(", TLS")).count()
    }

    /// A read-only connection; `None` while the database does not exist yet.
    fn read(&self) -> Option<rusqlite::Connection> {
        if !self.db.exists() {
            return None;
        }
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(&self.db, flags).ok()?;
        conn.busy_timeout(Duration::from_secs(5)).ok()?;
        Some(conn)
    }

    /// One number, or 0 while the database or the table does not exist yet.
    fn count(&self, sql: &str) -> i64 {
        self.read().and_then(|c| c.query_row(sql, [], |r| r.get(0)).ok()).unwrap_or(0)
    }

    /// Queued acknowledgements due now (not claimed by a sender for later).
    fn due_now(&self) -> usize {
        let Some(conn) = self.read() else { return 0 };
        let now = chrono::Utc::now();
        let Ok(mut stmt) = conn.prepare("SELECT next_attempt_at FROM outbox WHERE state = 'queued'") else {
            return 0;
        };
        let times: Vec<String> =
            stmt.query_map([], |r| r.get(0)).map(|rows| rows.flatten().collect()).unwrap_or_default();
        times.iter().filter(|t| chrono::DateTime::parse_from_rfc3339(t).map_or(true, |t| t <= now)).count()
    }

    fn inbox(&self) -> u32 {
        self.dovecot.status(USER, "INBOX").messages
    }

    fn acks(&self) -> usize {
        self.smtp.received_messages().len()
    }

    /// Polls until the running daemon has emptied INBOX and has no acknowledgement due;
    /// seconds since `since`. Then stops it with SIGTERM (bounded wait for the exit).
    fn settle(&self, daemon: &mut Daemon, since: Instant) -> f64 {
        let started = Instant::now();
        loop {
            if self.inbox() == 0 && self.due_now() == 0 {
                break;
            }
            if started.elapsed() > SETTLE_LIMIT {
                println!(
                    "WARNING: the running daemon did not catch up within {SETTLE_LIMIT:?} (INBOX {}, {} due); \
                     the last sweep (run --once) follows\n{}",
                    self.inbox(),
                    self.due_now(),
                    tail(&self.daemon_log(), 20)
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let secs = since.elapsed().as_secs_f64();
        daemon.terminate(Duration::from_secs(30), self);
        secs
    }

    /// The last sweep: `postdesk run --once`, bounded; what it did goes into `notes`.
    fn sweep(&self, notes: &mut String) {
        let (tickets, acks) = (self.count("SELECT COUNT(*) FROM tickets"), self.acks());
        let once = Instant::now();
        let mut run = self.command(&["run", "--once"]).spawn().expect("spawn postdesk run --once");
        let status = wait_child(&mut run, Duration::from_secs(300)).unwrap_or_else(|| {
            panic!("postdesk run --once did not finish within 300 s\n{}", tail(&self.daemon_log(), 40))
        });
        let (tickets_once, acks_once) = (self.count("SELECT COUNT(*) FROM tickets") - tickets, self.acks() - acks);
        println!(
            "run --once: {status} in {:.1} s, {tickets_once} more tickets, {acks_once} more acknowledgements",
            once.elapsed().as_secs_f64()
        );
        notes.push_str(&format!("; the last run --once added {tickets_once} tickets, {acks_once} acks"));
    }

    fn figures(&self, confirmed: &BTreeSet<String>, uncertain: &BTreeSet<String>, notes: String) -> Row {
        let conn = self.read().expect("the database exists");
        let integrity: String =
            conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("PRAGMA integrity_check");
        // Message-ID → (inbound articles, distinct tickets).
        let mut on_tickets: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        let mut stmt = conn
            .prepare(
                "SELECT message_id, COUNT(*), COUNT(DISTINCT ticket_id) FROM articles \
                 WHERE direction = 'in' AND message_id IS NOT NULL GROUP BY message_id",
            )
            .expect("query articles");
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))).expect("articles") {
            let (id, articles, tickets) = row.expect("an articles row");
            on_tickets.insert(bare(&id), (articles, tickets));
        }
        let one = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
        let tickets = one("SELECT COUNT(*) FROM tickets");
        let failed = one("SELECT COUNT(*) FROM failed_messages");
        let held = one("SELECT COUNT(*) FROM outbox WHERE state = 'queued'");
        let mut stmt = conn.prepare("SELECT in_reply_to FROM outbox WHERE state = 'queued'").expect("outbox");
        let held_ids: Vec<String> =
            stmt.query_map([], |r| r.get::<_, Option<String>>(0)).expect("outbox").flatten().flatten().collect();

        let inbox = imap_message_ids(&self.dovecot, "INBOX");
        let processed = imap_message_ids(&self.dovecot, "Processed");
        let failed_folder = imap_message_ids(&self.dovecot, "Failed");
        // What is known to have reached the mailbox: every confirmed APPEND, and the
        // uncertain ones that were seen (in a folder or on a ticket).
        let seen: BTreeSet<&String> =
            inbox.iter().chain(&processed).chain(&failed_folder).chain(on_tickets.keys()).collect();
        let delivered: BTreeSet<String> =
            confirmed.iter().chain(uncertain.iter().filter(|id| seen.contains(id))).cloned().collect();
        let lost: Vec<&String> = delivered.iter().filter(|id| !on_tickets.contains_key(*id)).collect();
        let dup_tickets = on_tickets.values().filter(|(_, t)| *t > 1).count();
        let dup_articles = on_tickets.values().filter(|(a, t)| a > t).count();
        let strangers = on_tickets.keys().filter(|id| !delivered.contains(*id)).count();
        let processed_distinct: BTreeSet<&String> = processed.iter().collect();

        let mut acked: BTreeMap<String, usize> = BTreeMap::new();
        for mail in self.smtp.received_messages() {
            let id = header(&mail.raw, "In-Reply-To").map(|v| bare(&v)).unwrap_or_default();
            *acked.entry(id).or_default() += 1;
        }
        let acks: usize = acked.values().sum();
        let ack_dups = acks - acked.len();
        let acks_missing = delivered.iter().filter(|id| !acked.contains_key(*id)).count();
        let held_received = held_ids.iter().filter(|id| acked.contains_key(&bare(id))).count();

        let mut problems = Vec::new();
        if integrity != "ok" {
            problems.push(format!("integrity_check: {integrity}"));
        }
        if !lost.is_empty() {
            let some: Vec<&str> = lost.iter().take(5).map(|s| s.as_str()).collect();
            problems.push(format!("{} Message-IDs on no ticket (e.g. {})", lost.len(), some.join(", ")));
        }
        if dup_tickets > 0 {
            problems.push(format!("{dup_tickets} Message-IDs on more than one ticket"));
        }
        if dup_articles > 0 {
            problems.push(format!("{dup_articles} Message-IDs stored twice on one ticket"));
        }
        if tickets as usize != delivered.len() - lost.len() {
            problems.push(format!("{tickets} tickets for {} delivered messages", delivered.len() - lost.len()));
        }
        if strangers > 0 {
            problems.push(format!("{strangers} tickets for Message-IDs never delivered"));
        }
        if !inbox.is_empty() {
            problems.push(format!("{} messages left in INBOX", inbox.len()));
        }
        Row {
            scenario: self.name,
            delivered: delivered.len(),
            uncertain: uncertain.len(),
            tickets,
            lost: lost.len(),
            duplicated: dup_tickets + dup_articles,
            inbox: inbox.len(),
            processed: processed.len(),
            processed_dups: processed.len() - processed_distinct.len(),
            failed,
            acks,
            ack_dups,
            acks_missing,
            held: held as usize,
            held_received,
            integrity,
            notes,
            problems,
            secs: 0.0,
        }
    }
}

/// A running `postdesk run`, killed (SIGKILL) when dropped.
struct Daemon(Option<Child>);

impl Daemon {
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and a bounded wait for a clean exit.
    fn terminate(&mut self, limit: Duration, world: &World) {
        let Some(mut child) = self.0.take() else { return };
        let pid = i32::try_from(child.id()).expect("pid fits in i32");
        // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        match wait_child(&mut child, limit) {
            Some(status) if status.success() => {}
            Some(status) => println!("WARNING: postdesk run exited with {status} on SIGTERM"),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("postdesk run did not exit within {limit:?} of SIGTERM\n{}", tail(&world.daemon_log(), 40));
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `condition` until it holds, panicking with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "chaos: timed out after {limit:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// --- faults --------------------------------------------------------------------------------

/// A tmpfs mounted for the scenario (root only), unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, megabytes: u32) -> Tmpfs {
        fs::create_dir_all(path).expect("create the mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(status.success(), "chaos: mount -t tmpfs failed ({status}); the full-disk scenario needs root");
        Tmpfs(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Writes zeros into `path` until the file system says it is full; the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = fs::File::create(path).expect("create the dummy file");
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 1] {
        let zeros = vec![0u8; chunk];
        loop {
            match file.write(&zeros) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("write {}: {e}", path.display()),
            }
        }
    }
    written
}

fn free_bytes(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("a path without NUL");
    // SAFETY: statvfs fills the zeroed struct; both pointers are valid for the call.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0, "statvfs {}", path.display());
    s.f_bavail as u64 * s.f_frsize as u64
}

/// `BEGIN EXCLUSIVE` held by a Python process for a while.
struct Lock(Child);

const LOCKER: &str = "import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
conn.execute('BEGIN EXCLUSIVE')
print('locked', flush=True)
time.sleep(float(sys.argv[2]))
conn.execute('ROLLBACK')
print('released', flush=True)
";

impl Lock {
    /// Returns once the lock is held.
    fn take(db: &Path, secs: f64) -> Lock {
        let mut child = Command::new(PYTHON)
            .args(["-c", LOCKER])
            .arg(db)
            .arg(secs.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {PYTHON}: {e}"));
        let stdout = child.stdout.take().expect("the locker's stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(70));
        assert!(
            matches!(line.as_deref(), Ok("locked")),
            "chaos: the locker did not take the lock within 70 s: {line:?}"
        );
        Lock(child)
    }

    fn wait_released(&mut self, limit: Duration) {
        let status = wait_child(&mut self.0, limit).expect("the locker exits after its time");
        assert!(status.success(), "chaos: the locker failed ({status})");
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// --- IMAP: appending through restarts, and Message-IDs of a folder --------------------------

/// A minimal client on Dovecot's plain port (LOGIN is allowed on loopback). Every failure
/// is an error, so that the appender can ride out a restart.
struct Imap {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    tag: u32,
}

struct Response {
    lines: Vec<String>,
    literals: Vec<Vec<u8>>,
}

impl Imap {
    fn login(port: u16) -> io::Result<Imap> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        let mut imap = Imap { reader: BufReader::new(stream.try_clone()?), stream, tag: 0 };
        let greeting = imap.line()?;
        if !greeting.starts_with(b"* OK") {
            return Err(io::Error::other(format!("greeting: {}", String::from_utf8_lossy(&greeting))));
        }
        imap.command(&format!("LOGIN \"{USER}\" \"{PASSWORD}\""), None)?;
        Ok(imap)
    }

    fn line(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        if self.reader.read_until(b'\n', &mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line)
    }

    /// Sends `text` (and `literal` as a LITERAL+ literal after it) and reads up to the
    /// tagged reply, which must be OK.
    fn command(&mut self, text: &str, literal: Option<&[u8]>) -> io::Result<Response> {
        self.tag += 1;
        let tag = format!("c{}", self.tag);
        let mut out = format!("{tag} {text}").into_bytes();
        if let Some(bytes) = literal {
            out.extend_from_slice(format!(" {{{}+}}\r\n", bytes.len()).as_bytes());
            out.extend_from_slice(bytes);
        }
        out.extend_from_slice(b"\r\n");
        self.stream.write_all(&out)?;
        let mut response = Response { lines: Vec::new(), literals: Vec::new() };
        loop {
            let line = self.line()?;
            let text = String::from_utf8_lossy(&line).into_owned();
            if let Some(rest) = text.strip_prefix(&format!("{tag} ")) {
                return if rest.starts_with("OK") { Ok(response) } else { Err(io::Error::other(text)) };
            }
            let size = text.trim_end().strip_suffix('}').and_then(|t| t.rsplit_once('{')).map(|(_, n)| n.parse());
            if let Some(Ok(size)) = size {
                let mut bytes = vec![0; size];
                self.reader.read_exact(&mut bytes)?;
                response.literals.push(bytes);
            }
            response.lines.push(text);
        }
    }
}

/// The Message-ID of every message in `folder` (none when it does not exist), with repeats.
fn imap_message_ids(dovecot: &Dovecot, folder: &str) -> Vec<String> {
    if !dovecot.folder_exists(USER, folder) {
        return Vec::new();
    }
    let mut imap = Imap::login(dovecot.imap_port()).expect("log in to Dovecot");
    let selected = imap.command(&format!("EXAMINE \"{folder}\""), None).expect("EXAMINE");
    let exists: Option<u32> =
        selected.lines.iter().find_map(|l| l.strip_prefix("* ")?.strip_suffix(" EXISTS\r\n")?.parse().ok());
    if exists.unwrap_or(0) == 0 {
        return Vec::new();
    }
    let fetched = imap.command("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])", None).expect("FETCH");
    fetched.literals.iter().map(|h| header(h, "Message-ID").map(|v| bare(&v)).unwrap_or_default()).collect()
}

/// What an appender thread got through.
struct Appended {
    /// Message-IDs whose APPEND was answered OK (at least once).
    confirmed: BTreeSet<String>,
    /// Message-IDs whose APPEND was never answered OK (the connection broke each time):
    /// they may or may not be in the mailbox.
    uncertain: BTreeSet<String>,
    /// APPENDs sent again on a new connection after the old one broke before the answer
    /// (the first one may have been stored too: then the message is there twice).
    retried: usize,
}

/// Appends messages `range` one by one, `gap` apart, on one connection, reconnecting
/// (polling, up to 60 s) after it breaks and sending the interrupted one again.
fn stream(port: u16, range: std::ops::Range<usize>, gap: Duration) -> JoinHandle<Appended> {
    std::thread::spawn(move || {
        let mut out = Appended { confirmed: BTreeSet::new(), uncertain: BTreeSet::new(), retried: 0 };
        let mut imap: Option<Imap> = None;
        let start = Instant::now();
        for (k, i) in range.enumerate() {
            std::thread::sleep((gap * k as u32).saturating_sub(start.elapsed()));
            let raw = message(i);
            let broke_at = Instant::now();
            loop {
                if imap.is_none() {
                    match Imap::login(port) {
                        Ok(conn) => imap = Some(conn),
                        Err(e) => {
                            assert!(broke_at.elapsed() < Duration::from_secs(60), "chaos: no IMAP login for 60 s: {e}");
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                    }
                }
                let conn = imap.as_mut().expect("logged in");
                match conn.command("APPEND \"INBOX\"", Some(&raw)) {
                    Ok(_) => {
                        out.confirmed.insert(message_id(i));
                        out.uncertain.remove(&message_id(i));
                        break;
                    }
                    Err(_) => {
                        imap = None;
                        out.retried += 1;
                        out.uncertain.insert(message_id(i));
                    }
                }
            }
        }
        out
    })
}

// --- mail headers ------------------------------------------------------------------------

/// The first `name:` header's unfolded value.
fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut value: Option<String> = None;
    for line in head.split("\r\n") {
        if let Some(v) = value.as_mut() {
            if line.starts_with([' ', '\t']) {
                v.push_str(line);
                continue;
            }
            break;
        }
        if let Some((key, rest)) = line.split_once(':') {
            if key.eq_ignore_ascii_case(name) {
                value = Some(rest.to_owned());
            }
        }
    }
    value.map(|v| v.trim().to_owned())
}

/// A Message-ID without its angle brackets.
fn bare(id: &str) -> String {
    id.trim().trim_start_matches('<').trim_end_matches('>').to_owned()
}

// --- figures -----------------------------------------------------------------------------

struct Row {
    scenario: &'static str,
    /// Distinct Message-IDs that reached the mailbox.
    delivered: usize,
    /// APPENDs whose answer was lost with the connection.
    uncertain: usize,
    tickets: i64,
    lost: usize,
    duplicated: usize,
    inbox: usize,
    processed: usize,
    processed_dups: usize,
    failed: i64,
    acks: usize,
    ack_dups: usize,
    acks_missing: usize,
    /// Outbox rows still queued (claimed by a killed sender until 10 minutes after the
    /// claim), and how many of those the SMTP server already has (they will go out twice).
    held: usize,
    held_received: usize,
    integrity: String,
    notes: String,
    problems: Vec<String>,
    secs: f64,
}

impl Row {
    fn line(&self) -> String {
        format!(
            "{}: {} delivered ({} uncertain APPENDs), {} tickets, {} lost, {} duplicated, INBOX {}, Processed {} \
             ({} duplicate copies), {} failed, {} acks received ({} duplicates, {} missing), {} held in the outbox \
             ({} of them already received), integrity {}, {:.0} s\n  {}",
            self.scenario,
            self.delivered,
            self.uncertain,
            self.tickets,
            self.lost,
            self.duplicated,
            self.inbox,
            self.processed,
            self.processed_dups,
            self.failed,
            self.acks,
            self.ack_dups,
            self.acks_missing,
            self.held,
            self.held_received,
            self.integrity,
            self.secs,
            self.notes
        )
    }
}

fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| scenario | mail delivered | tickets | lost | duplicated | INBOX left | Processed (dup copies) | failed \
         | acks received | dup acks | acks missing | acks held (already received) | integrity | s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} ({}) | {} | {:.0} |\n",
            r.scenario,
            r.delivered,
            r.tickets,
            r.lost,
            r.duplicated,
            r.inbox,
            r.processed,
            r.processed_dups,
            r.failed,
            r.acks,
            r.ack_dups,
            r.acks_missing,
            r.held,
            r.held_received,
            r.integrity,
            r.secs
        ));
    }
    t
}
