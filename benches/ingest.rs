//! End-to-end ingest benchmark: 10,000 generated ~8 KB messages from 200 sender domains
//! are written to files, then read, parsed, decided and committed into a fresh database
//! in group-committed batches (`desk::ingest::ingest_batch`), exactly as `postdesk ingest
//! DIR` does. Prints messages per second, CPU per message and the process's peak RSS.
//! Run: `cargo bench --bench ingest` (`BENCH_MESSAGES=N` changes the count; not
//! `POSTDESK_…`, which postdesk would read as a setting).

#[path = "common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::Utc;
use postdesk::config;
use postdesk::desk::ingest::{self, Message, Outcome, Source};
use postdesk::store::Store;

const DOMAINS: usize = 200;

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_secs() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn write_messages(dir: &Path, count: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|i| {
            let path = dir.join(format!("{i:06}.eml"));
            std::fs::write(&path, common::message(i)).expect("write message");
            path
        })
        .collect()
}

fn main() {
    let count: usize = std::env::var("BENCH_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let files = write_messages(dir.path(), count);
    let config = config::load(Some(&write_config(dir.path())), None).expect("config");
    let mut store = Store::create(&config.database).expect("store");

    let (start, cpu_start) = (Instant::now(), cpu_secs());
    let mut created = 0;
    for chunk in files.chunks(config.batch_size) {
        let messages: Vec<Message> = chunk
            .iter()
            .map(|p| {
                let raw = std::fs::read(p).expect("read message");
                let source = Source::file(p.display().to_string(), &raw);
                Message { prepared: ingest::prepare(&raw, &config.policy), raw, source }
            })
            .collect();
        let reports = ingest::ingest_batch(&mut store, &config, &messages, Utc::now()).expect("ingest");
        created += reports.iter().filter(|r| matches!(r.outcome, Outcome::Created { .. })).count();
    }
    let (secs, cpu) = (start.elapsed().as_secs_f64(), cpu_secs() - cpu_start);
    let bytes: u64 = files.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
    println!(
        "ingest: {count} messages ({:.1} KB average, {DOMAINS} sender domains, {created} new tickets) in {secs:.2} s \
         = {:.0} messages/s, CPU {cpu:.2} s = {:.3} ms per message, batches of {}, peak RSS {:.1} MB",
        bytes as f64 / count as f64 / 1000.0,
        count as f64 / secs,
        cpu * 1000.0 / count as f64,
        config.batch_size,
        peak_rss_kib() as f64 / 1024.0
    );
}

fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("postdesk.toml");
    let toml = format!("[database]\npath = \"{}\"\n", dir.join("bench.db").display());
    std::fs::write(&path, toml).expect("write config");
    path
}
