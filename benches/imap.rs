//! IMAP benchmark, all against one private Dovecot in one run (`scripts/bench-imap`):
//! 10,000 ~8 KB messages are appended over IMAP, then fetched by (a) a minimal Python
//! imaplib client (the raw TLS fetch ceiling), (b) fetchmail and (c) mbsync, and (d)
//! drained into tickets by `postdesk run --once`; each reports messages/s, CPU seconds
//! and peak RSS. Then 50 latency trials: APPEND → ticket committed by a running
//! `postdesk run`, against APPEND → `* EXISTS` seen by a bare IDLE client. Last, the
//! resident memory of a daemon on two mailboxes before, during and after a drain
//! (`BENCH_ONLY=memory` runs that part alone; `BENCH_ONLY=drain` only the raw fetch
//! and postdesk's drain).

#[path = "common.rs"]
mod common;
#[allow(dead_code)]
#[path = "../tests/it/dovecot.rs"]
mod dovecot;
#[path = "imap_client.rs"]
mod imap_client;
#[allow(dead_code)]
#[path = "../tests/it/servers.rs"]
mod servers;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dovecot::Dovecot;

const USER: &str = "support@helpdesk.example";
const PASSWORD: &str = "bench-pw";

struct Usage {
    secs: f64,
    cpu_secs: f64,
    max_rss_mb: f64,
}

/// Runs a command to its end; wall time, CPU time and peak RSS of the child (wait4).
fn measure(mut cmd: Command) -> Usage {
    let start = Instant::now();
    // Reaped by wait4 below, which also reports the child's resource usage.
    #[expect(clippy::zombie_processes)]
    let child = cmd.stdin(Stdio::null()).spawn().expect("spawn");
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; both pointers are valid for the call.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{cmd:?} failed: status {status}");
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage {
        secs: start.elapsed().as_secs_f64(),
        cpu_secs: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_mb: usage.ru_maxrss as f64 / 1024.0,
    }
}

fn report(name: &str, n: usize, u: &Usage) -> f64 {
    let rate = n as f64 / u.secs;
    println!(
        "{name:<28} {:>8.0} msg/s  {:>6.2} s  CPU {:>6.2} s  peak RSS {:>6.1} MB",
        rate, u.secs, u.cpu_secs, u.max_rss_mb
    );
    rate
}

const RAW_FETCH: &str = r#"
import imaplib, ssl, sys
port, ca, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
imap = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ssl.create_default_context(cafile=ca))
imap.login(user, password)
imap.select("INBOX", readonly=True)
uids = imap.uid("SEARCH", None, "ALL")[1][0].split()
got = 0
for i in range(0, len(uids), 500):
    batch = uids[i:i + 500]
    typ, data = imap.uid("FETCH", b"%s:%s" % (batch[0], batch[-1]), "(BODY.PEEK[])")
    got += sum(1 for d in data if isinstance(d, tuple))
assert got == len(uids), (got, len(uids))
imap.logout()
"#;

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn main() {
    let n: usize = std::env::var("BENCH_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let dovecot = Dovecot::start(&[(USER, PASSWORD)]);
    if std::env::var("BENCH_ONLY").as_deref() == Ok("memory") {
        return memory(&dovecot, dir, n);
    }
    let (port, ca) = (dovecot.imaps_port(), dovecot.ca_file());
    let seeding = Instant::now();
    dovecot.append_many(USER, PASSWORD, "INBOX", (0..n).map(common::message));
    println!("seeded {n} messages (~8 KB) over IMAP in {:.1} s\n", seeding.elapsed().as_secs_f64());

    let mut raw = Command::new("python3");
    raw.args(["-c", RAW_FETCH, &port.to_string(), &ca.display().to_string(), USER, PASSWORD]);
    let raw_rate = report("raw imaplib fetch (TLS)", n, &measure(raw));
    let only_drain = std::env::var("BENCH_ONLY").as_deref() == Ok("drain");

    let fetchmailrc = write(
        dir,
        "fetchmailrc",
        &format!(
            "set no bouncemail\npoll 127.0.0.1 port {port} protocol IMAP\n  user \"{USER}\" password \"{PASSWORD}\"\n  \
             ssl sslcertfile \"{}\" sslcertck\n  fetchall keep\n  mda \"cat >/dev/null\"\n",
            ca.display()
        ),
        0o600,
    );
    let mut fetchmail = Command::new("fetchmail");
    fetchmail.args(["-f", &fetchmailrc.display().to_string(), "--nosyslog", "--silent"]).env("HOME", dir);
    let fetchmail_rate = if only_drain { f64::NAN } else { report("fetchmail (mda cat)", n, &measure(fetchmail)) };

    let maildir = dir.join("mbsync-maildir");
    std::fs::create_dir_all(&maildir).unwrap();
    let mbsyncrc = write(
        dir,
        "mbsyncrc",
        &format!(
            "IMAPAccount bench\nHost 127.0.0.1\nPort {port}\nUser {USER}\nPass {PASSWORD}\nSSLType IMAPS\nCertificateFile {}\n\n\
             IMAPStore remote\nAccount bench\n\nMaildirStore local\nPath {m}/\nInbox {m}/INBOX\n\n\
             Channel bench\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Near\nSync Pull\n",
            ca.display(),
            m = maildir.display()
        ),
        0o600,
    );
    let mut mbsync = Command::new("mbsync");
    mbsync.args(["-q", "-c", &mbsyncrc.display().to_string(), "-a"]).env("HOME", dir);
    let mbsync_rate = if only_drain { f64::NAN } else { report("mbsync (Maildir, fsync)", n, &measure(mbsync)) };

    let config = write(
        dir,
        "postdesk.toml",
        &format!(
            "[database]\npath = \"{}\"\n[[mailbox]]\nname = \"support\"\naddress = \"{USER}\"\nhost = \"127.0.0.1\"\n\
             port = {port}\nca_file = \"{}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n",
            dir.join("postdesk.db").display(),
            ca.display()
        ),
        0o600,
    );
    let postdesk = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_postdesk"));
        cmd.arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stderr(std::fs::File::create("/tmp/drain-stderr.log").unwrap());
        cmd
    };
    let mut drain = postdesk();
    drain.args(["run", "--once"]);
    let usage = measure(drain);
    let db = rusqlite::Connection::open(dir.join("postdesk.db")).unwrap();
    let tickets = || -> i64 { db.query_row("SELECT COUNT(*) FROM processed", [], |r| r.get(0)).unwrap() };
    assert_eq!(tickets(), n as i64, "postdesk did not ingest every message");
    let postdesk_rate = report("postdesk run --once", n, &usage);
    println!(
        "\npostdesk: {:.0}% of the raw fetch ceiling, {:.1}x fetchmail, {:.1}x mbsync; every message parsed and \
         durably committed\n",
        100.0 * postdesk_rate / raw_rate,
        postdesk_rate / fetchmail_rate,
        postdesk_rate / mbsync_rate
    );

    if only_drain {
        return;
    }
    latency(&dovecot, postdesk(), &tickets);
    memory(&dovecot, dir, n);
}

/// A figure of `/proc/PID/status` in MB (`VmRSS`: now; `VmHWM`: the peak).
fn proc_status_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kb / 1024.0
}

/// The resident memory of a daemon watching two mailboxes: idle, at its peak while it
/// drains `n` messages appended as it watches, and idle again afterwards.
fn memory(dovecot: &Dovecot, dir: &Path, n: usize) {
    let (port, ca) = (dovecot.imaps_port(), dovecot.ca_file());
    let mut mailboxes = String::new();
    for folder in ["Memory1", "Memory2"] {
        dovecot.create_folder(USER, folder);
        mailboxes += &format!(
            "[[mailbox]]\nname = \"{folder}\"\naddress = \"{USER}\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             ca_file = \"{}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\nfolder = \"{folder}\"\n",
            ca.display()
        );
    }
    let db = dir.join("memory.db");
    let config = write(dir, "memory.toml", &format!("[database]\npath = \"{}\"\n{mailboxes}", db.display()), 0o600);
    let mut run = Command::new(env!("CARGO_BIN_EXE_postdesk"));
    run.arg("--config").arg(&config).arg("run").env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::null());
    let daemon = Running(run.spawn().unwrap());
    let pid = daemon.0.id();
    // Settled: both mailboxes connected and in IDLE.
    std::thread::sleep(Duration::from_secs(3));
    let idle = proc_status_mb(pid, "VmRSS:");
    dovecot.append_many(USER, PASSWORD, "Memory1", (0..n).map(|i| common::message(2_000_000 + i)));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    while conn.query_row("SELECT COUNT(*) FROM processed", [], |r| r.get::<_, i64>(0)).unwrap() < n as i64 {
        assert!(Instant::now() < deadline, "the daemon did not drain {n} messages in 10 minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let (after, peak) = (proc_status_mb(pid, "VmRSS:"), proc_status_mb(pid, "VmHWM:"));
    let (anonymous, file) = (proc_status_mb(pid, "RssAnon:"), proc_status_mb(pid, "RssFile:"));
    println!("\nresident memory of `postdesk run` on two mailboxes:");
    println!("  idle {idle:.1} MB, peak {peak:.1} MB while draining {n} messages, idle again after it {after:.1} MB");
    let (binary, database) = (mapped_mb(pid, |p| p.ends_with("/postdesk")), mapped_mb(pid, |p| p.contains(".db")));
    println!(
        "  after it: {anonymous:.1} MB anonymous, {file:.1} MB file-backed ({binary:.1} MB of the binary's pages, \
         {database:.1} MB of mapped database pages)"
    );
}

/// The resident MB of a process's mappings of the files whose path `pick` chooses.
fn mapped_mb(pid: u32, pick: impl Fn(&str) -> bool) -> f64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let (mut picked, mut kb) = (false, 0.0);
    for line in smaps.lines() {
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["Rss:", n, "kB"] if picked => kb += n.parse::<f64>().unwrap(),
            [range, ..] if range.contains('-') && range.chars().all(|c| c.is_ascii_hexdigit() || c == '-') => {
                picked = line.split_whitespace().nth(5).is_some_and(&pick);
            }
            _ => {}
        }
    }
    kb / 1024.0
}

/// Kills the daemon however the benchmark ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Appends one message on an open connection and waits for the server's OK.
fn append(w: &mut TcpStream, r: &mut BufReader<TcpStream>, tag: &str, folder: &str, raw: &[u8]) {
    write!(w, "{tag} APPEND {folder} {{{}+}}\r\n", raw.len()).unwrap();
    w.write_all(raw).unwrap();
    w.write_all(b"\r\n").unwrap();
    imap_client::read_until(r, &format!("{tag} "));
}

/// Alternating trials on one server: APPEND to a folder only a bare IDLE client watches,
/// then APPEND to the folder postdesk watches. (Sharing one folder would let postdesk
/// expunge a message before Dovecot tells the bare client it exists.)
fn latency(dovecot: &Dovecot, mut daemon: Command, processed: &dyn Fn() -> i64) {
    let _daemon = Running(daemon.arg("run").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    dovecot.create_folder(USER, "Bare");
    let rx = imap_client::idle_watcher(dovecot.imap_port(), USER, PASSWORD, "Bare");
    let (mut w, mut r) = imap_client::imap_login(dovecot.imap_port(), USER, PASSWORD);
    let start_count = processed();
    // Let the daemon connect and settle into IDLE.
    std::thread::sleep(Duration::from_secs(2));
    let (mut bare, mut ours) = (Vec::new(), Vec::new());
    // Pacing so that each trial starts on a quiet mailbox (Dovecot batches notifications).
    let pause = Duration::from_millis(700);
    for trial in 0..50 {
        let raw = common::message(1_000_000 + trial);
        while rx.try_recv().is_ok() {}
        let t0 = Instant::now();
        append(&mut w, &mut r, &format!("b{trial}"), "Bare", &raw);
        let seen = rx.recv_timeout(Duration::from_secs(10)).expect("the bare IDLE client saw EXISTS");
        bare.push((seen - t0).as_secs_f64() * 1000.0);
        std::thread::sleep(pause);

        let t0 = Instant::now();
        append(&mut w, &mut r, &format!("a{trial}"), "INBOX", &raw);
        let deadline = Instant::now() + Duration::from_secs(10);
        while processed() < start_count + trial as i64 + 1 {
            assert!(Instant::now() < deadline, "postdesk did not commit trial {trial} within 10 s");
            std::thread::sleep(Duration::from_micros(500));
        }
        ours.push(t0.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(pause);
    }
    let ((mb, pb), (mo, po)) = (imap_client::median_p99(&mut bare), imap_client::median_p99(&mut ours));
    println!("latency over 50 trials, APPEND to …");
    println!("  bare IDLE client sees EXISTS   median {mb:>6.0} ms  p99 {pb:>6.0} ms");
    println!("  postdesk ticket committed      median {mo:>6.0} ms  p99 {po:>6.0} ms");
    println!("  postdesk - bare client         median {:>+6.0} ms", mo - mb);
}
