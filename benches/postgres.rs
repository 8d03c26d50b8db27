//! PostgreSQL benchmark (`scripts/bench-postgres`), against a private Dovecot and a
//! private PostgreSQL in one run:
//! 1. drain: 10,000 ~8 KB messages from one mailbox by `postdesk run --once` into SQLite,
//!    then into PostgreSQL, then two daemons on two mailboxes of 5,000 each into one
//!    PostgreSQL database; messages/s of each, and the ratios.
//! 2. fail-over: two `postdesk run` on one mailbox and one database while mail arrives
//!    (one message every 100 ms) and acknowledgements go out; ten times the daemon holding
//!    the mailbox's lease is SIGKILLed (and started again): the time from the kill until
//!    the next message is a ticket; at the end, tickets, Message-IDs and acknowledgements
//!    are counted for losses and duplicates.

#[path = "common.rs"]
mod common;
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

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dovecot::Dovecot;
use harness::{Backend, Dir};
use smtp::{SmtpOptions, SmtpServer};

const USERS: [&str; 2] = ["support@helpdesk.example", "sales@helpdesk.example"];
const PASSWORD: &str = "bench-pw";
const KILLS: usize = 10;

fn mailbox(dovecot: &Dovecot, user: &str) -> String {
    format!(
        "[[mailbox]]\nname = \"{user}\"\naddress = \"{user}\"\nhost = \"127.0.0.1\"\nport = {}\nca_file = \"{}\"\n\
         username = \"{user}\"\npassword = \"{PASSWORD}\"\npoll_interval_secs = 5\n",
        dovecot.imaps_port(),
        dovecot.ca_file().display()
    )
}

/// `postdesk run --once` on each config at the same time; the wall time until all end.
fn drain(configs: &[PathBuf]) -> f64 {
    let start = Instant::now();
    let children: Vec<Child> = configs
        .iter()
        .map(|config| {
            Command::new(env!("CARGO_BIN_EXE_postdesk"))
                .arg("--config")
                .arg(config)
                .args(["run", "--once"])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("start postdesk")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().expect("wait for postdesk").success(), "a drain failed");
    }
    start.elapsed().as_secs_f64()
}

fn drains(n: usize) {
    let dovecot = Dovecot::start(&USERS.map(|u| (u, PASSWORD)));
    let seed = |user: &str, range: std::ops::Range<usize>| {
        let started = Instant::now();
        dovecot.append_many(user, PASSWORD, "INBOX", range.map(common::message));
        started.elapsed().as_secs_f64()
    };
    let one = mailbox(&dovecot, USERS[0]);

    let seeded = seed(USERS[0], 0..n);
    println!("seeded {n} messages (~8 KB) over IMAP in {seeded:.1} s");
    let sqlite = Dir::on(Backend::Sqlite, &one);
    let secs = drain(&[sqlite.config()]);
    assert_eq!(sqlite.count("SELECT COUNT(*) FROM processed"), n as i64);
    let sqlite_rate = n as f64 / secs;
    println!("SQLite, one daemon:                 {sqlite_rate:>6.0} msg/s ({secs:.1} s)");

    seed(USERS[0], 0..n);
    let pg = Dir::on(Backend::Postgres, &one);
    let secs = drain(&[pg.config()]);
    assert_eq!(pg.count("SELECT COUNT(*) FROM processed"), n as i64);
    let pg_rate = n as f64 / secs;
    println!("PostgreSQL, one daemon:             {pg_rate:>6.0} msg/s ({secs:.1} s)");

    // Two daemons, each on its own mailbox, into one database.
    seed(USERS[0], 0..n / 2);
    seed(USERS[1], n / 2..n);
    let two = Dir::on(Backend::Postgres, "");
    let (server, name) = two.postgres.as_ref().expect("a PostgreSQL dir");
    let configs: Vec<PathBuf> = USERS
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let path = two.path().join(format!("daemon{i}.toml"));
            std::fs::write(&path, format!("{}{}", server.config(name), mailbox(&dovecot, user))).expect("config");
            path
        })
        .collect();
    let secs = drain(&configs);
    assert_eq!(two.count("SELECT COUNT(*) FROM processed"), n as i64);
    let two_rate = n as f64 / secs;
    println!("PostgreSQL, two daemons, 2 × {}:  {two_rate:>6.0} msg/s ({secs:.1} s)", n / 2);
    println!(
        "\nPostgreSQL / SQLite, one daemon: {:.2}; two daemons / one daemon on PostgreSQL: {:.2}\n",
        pg_rate / sqlite_rate,
        two_rate / pg_rate
    );
}

/// A `postdesk run` logging into a file.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Dir, n: usize) -> Daemon {
        let log = dir.path().join(format!("daemon-{n}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_postdesk"))
            .arg("--config")
            .arg(dir.config())
            .arg("run")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start postdesk");
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Until `done`; after `limit`, a panic naming `what`, with the daemons' logs.
fn wait(limit: Duration, what: &str, daemons: &[Daemon], mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            let logs: Vec<String> = daemons.iter().map(Daemon::log).collect();
            panic!("not within {limit:?}: {what}\n{}", logs.join("\n---\n"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn fail_over() {
    let dovecot = Arc::new(Dovecot::start(&[(USERS[0], PASSWORD)]));
    let smtp = SmtpServer::start(SmtpOptions::default());
    let extra = format!(
        "{}[acknowledgement]\nmax_per_sender_per_day = 100000\nmax_per_domain_per_day = 100000\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
        mailbox(&dovecot, USERS[0]),
        smtp.port()
    );
    let dir = Dir::on(Backend::Postgres, &extra);
    let mut daemons = vec![Daemon::start(&dir, 0), Daemon::start(&dir, 1)];
    wait(Duration::from_secs(60), "a daemon holds the mailbox", &daemons, || {
        daemons.iter().any(|d| d.log().contains("connected to"))
    });

    let appended = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let (dovecot, appended, stop) = (Arc::clone(&dovecot), Arc::clone(&appended), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let i = appended.load(Ordering::Relaxed);
                dovecot.append(USERS[0], "INBOX", &common::message(i));
                appended.store(i + 1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let (server, name) = dir.postgres.as_ref().expect("a PostgreSQL dir");
    let holder_pid = || -> Option<u32> {
        let holder = server.sql(name, "SELECT holder FROM mailbox_leases");
        holder.strip_prefix("pid ")?.split(' ').next()?.parse().ok()
    };
    let stored =
        |i: usize| dir.count(&format!("SELECT COUNT(*) FROM articles WHERE message_id = 'm{i}@bench.example'"));
    let mut takeovers = Vec::new();
    for round in 0..KILLS {
        std::thread::sleep(Duration::from_secs(2));
        let pid = holder_pid().expect("a lease holder");
        let index = daemons.iter().position(|d| d.child.id() == pid).expect("the holder is one of ours");
        let mut holder = daemons.remove(index);
        let _ = holder.child.kill();
        let killed = Instant::now();
        // The first message appended after the kill.
        let next = appended.load(Ordering::Relaxed);
        let _ = holder.child.wait();
        wait(Duration::from_secs(120), "the next message after the kill is a ticket", &daemons, || stored(next) > 0);
        let took = killed.elapsed().as_secs_f64();
        takeovers.push(took);
        println!("kill {}: message {next} a ticket {took:.2} s after the kill", round + 1);
        let restarted = Daemon::start(&dir, 2 + round);
        let standing_by = || restarted.log().contains("standing by");
        wait(Duration::from_secs(60), "the restarted daemon stands by", std::slice::from_ref(&restarted), standing_by);
        daemons.push(restarted);
    }
    stop.store(true, Ordering::Relaxed);
    appender.join().expect("the appender");
    let total = appended.load(Ordering::Relaxed) as i64;
    wait(Duration::from_secs(120), "every message is a ticket", &daemons, || {
        dir.count("SELECT COUNT(*) FROM processed") == total
    });
    wait(Duration::from_secs(120), "every acknowledgement is sent", &daemons, || {
        dir.count("SELECT COUNT(*) FROM outbox WHERE state = 'queued'") == 0
    });
    let tickets = dir.count("SELECT COUNT(*) FROM tickets");
    let articles = dir.count("SELECT COUNT(*) FROM articles");
    let distinct = dir.count("SELECT COUNT(DISTINCT message_id) FROM articles");
    let queued = dir.count("SELECT COUNT(*) FROM outbox");
    let ids = smtp.received_message_ids();
    let distinct_acks = ids.iter().collect::<BTreeSet<_>>().len();
    takeovers.sort_by(f64::total_cmp);
    println!(
        "\n{KILLS} kills: takeover median {:.2} s, max {:.2} s; {total} messages appended, {articles} stored \
         ({distinct} distinct Message-IDs, {tickets} tickets): {} lost, {} duplicated; {queued} acknowledgements \
         queued, {} received ({distinct_acks} distinct): {} duplicated",
        takeovers[takeovers.len() / 2],
        takeovers[takeovers.len() - 1],
        total - distinct,
        articles - distinct,
        ids.len(),
        ids.len() - distinct_acks
    );
}

fn main() {
    let n: usize = std::env::var("BENCH_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    if std::env::var("BENCH_PART").map_or(true, |p| p == "drain") {
        drains(n);
    }
    if std::env::var("BENCH_PART").map_or(true, |p| p == "fail-over") {
        fail_over();
    }
}
