//! The console under load: a database of 100,000 tickets, 50,000 customers and 5,000
//! organisations is served by `postdesk web`; 20 clients, each signed in as an agent of
//! its own, request one kind of page after another as fast as they are answered, and the
//! median and 99th percentile of each kind are printed. Then the drain rate of
//! `postdesk ingest` (the daemon's batch loop) into the same database is measured alone
//! and again while the 20 clients load the console, alternately, seven times in the same
//! run.
//!
//! Run: `scripts/bench-web` (`cargo bench --bench web`). `PD_BENCH_DB=PATH` keeps
//! the filled database there and reuses it on the next run; `PD_BENCH_SECS` sets
//! the seconds per kind of page (default 5).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use postdesk::config::{self, Config};
use postdesk::core::route::State;
use postdesk::desk::agents::{self, Add, Role};
use postdesk::desk::ingest::{Batch, Source};
use postdesk::desk::tickets::{self, Query, SetState};
use postdesk::store::Store;

const TICKETS: usize = 100_000;
const CUSTOMERS: usize = 50_000;
const ORGANISATIONS: usize = 5_000;
const CLIENTS: usize = 20;
const DRAIN_MESSAGES: usize = 5_000;

type Body = Empty<axum::body::Bytes>;

fn main() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let db = std::env::var_os("PD_BENCH_DB").map_or_else(|| scratch.path().join("bench.db"), PathBuf::from);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config_path = scratch.path().join("postdesk.toml");
    std::fs::write(
        &config_path,
        format!("[database]\npath = \"{}\"\n[web]\nlisten = \"127.0.0.1:{port}\"\n", db.display()),
    )
    .unwrap();
    let config = config::load(Some(&config_path), None).expect("config");
    if !db.exists() {
        fill(&config);
    }
    let sessions = sign_in(&config);
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_postdesk"))
            .arg("--config")
            .arg(&config_path)
            .arg("web")
            .stderr(Stdio::null())
            .spawn()
            .expect("postdesk web"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_for(port);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let secs: u64 = std::env::var("PD_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let pages = pages(&config);
    println!(
        "console: {TICKETS} tickets, {CUSTOMERS} customers, {ORGANISATIONS} organisations; {CLIENTS} clients, \
         {secs} s per page"
    );
    println!("{:<44} {:>9} {:>9} {:>9}", "page", "median ms", "p99 ms", "req/s");
    for (name, urls) in &pages {
        let never = tokio_util::sync::CancellationToken::new();
        // Each address once first (as agents revisit pages), so that what is measured is
        // the console, not the first read of a page of the database from disk.
        runtime.block_on(warm(&base, &sessions[0], urls));
        let latencies = runtime.block_on(load(&base, &sessions, urls, Duration::from_secs(secs), never));
        report(name, &latencies, secs);
    }
    // Alone and under load, alternately, seven times after a round that warms up (the
    // disk's pace drifts over a run; the first drain after the fill is always slow).
    let all: Vec<String> = pages.iter().flat_map(|(_, urls)| urls.iter().cloned()).collect();
    let (mut alone, mut loaded) = (Vec::new(), Vec::new());
    // New mail on every run, also into a kept database.
    let run = Utc::now().timestamp();
    drain(&config_path, scratch.path(), &format!("warm{run}"));
    for round in 0..7 {
        alone.push(drain(&config_path, scratch.path(), &format!("alone{run}r{round}")));
        loaded.push(runtime.block_on(async {
            let stop = tokio_util::sync::CancellationToken::new();
            let (b, s, urls, token) = (base.clone(), Arc::clone(&sessions), all.clone(), stop.clone());
            let load = tokio::spawn(async move { load(&b, &s, &urls, Duration::from_secs(3600), token).await.len() });
            let (config_path, dir) = (config_path.clone(), scratch.path().to_owned());
            let tag = format!("loaded{run}r{round}");
            let rate = tokio::task::spawn_blocking(move || drain(&config_path, &dir, &tag)).await.unwrap();
            stop.cancel();
            let requests = load.await.unwrap();
            println!("  round {round}: {:.0} messages/s alone, {rate:.0} with the console answering {requests} requests meanwhile", alone[round]);
            rate
        }));
    }
    let (alone, loaded) = (median(&mut alone), median(&mut loaded));
    println!(
        "drain (postdesk ingest, {DRAIN_MESSAGES} messages, median of 7): {alone:.0} messages/s alone, {loaded:.0} \
         messages/s with {CLIENTS} clients on the console ({:+.1} %)",
        (loaded / alone - 1.0) * 100.0
    );
    server.0.kill().ok();
}

/// `postdesk web`, stopped when the benchmark ends however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn wait_for(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "postdesk web did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ticket `i`'s message: from one of 50,000 customers at one of 5,000 company domains.
fn message(i: usize, tag: &str) -> Vec<u8> {
    let customer = i % CUSTOMERS;
    let domain = customer % ORGANISATIONS;
    let body = "The printer on the third floor shows error 0x42 again after the update.\r\n".repeat(8);
    format!(
        "From: Customer {customer} <customer{customer}@company{domain}.example>\r\nTo: support@helpdesk.example\r\n\
         Subject: {tag} request {i} about the printer\r\nMessage-ID: <{tag}{i}@bench.example>\r\n\r\n{body}"
    )
    .into_bytes()
}

/// Ingests the tickets over the past year (customers join month by month), then works
/// them: states and owners as a busy helpdesk has them.
fn fill(config: &Config) {
    let start = Instant::now();
    let mut store = Store::create(&config.database).expect("store");
    let first = Utc.with_ymd_and_hms(2025, 11, 1, 9, 0, 0).unwrap();
    let step = chrono::Duration::seconds(365 * 86_400 / TICKETS as i64);
    for chunk in (0..TICKETS).collect::<Vec<_>>().chunks(500) {
        let mut batch = Batch::begin(&mut store, config).expect("begin");
        for &i in chunk {
            let raw = message(i, "fill");
            let source = Source::file(format!("fill-{i}"), &raw);
            batch.ingest_one(&raw, &source, first + step * i as i32).expect("ingest");
        }
        batch.commit().expect("commit");
    }
    let agents = add_agents(&mut store);
    let numbers = store.read(|tx| tickets::list(tx, &Query::default(), Utc::now())).expect("tickets");
    store
        .write(|tx| {
            for (i, ticket) in numbers.iter().enumerate() {
                let state = [State::Open, State::Pending, State::Closed, State::Closed, State::Open][i % 5];
                if i % 7 != 0 {
                    tickets::set_state(tx, &SetState { number: ticket.number.clone(), state }, Utc::now())?;
                }
                if i % 3 == 0 {
                    tickets::set_owner(tx, &ticket.number, Some(agents[i % agents.len()]), Utc::now())?;
                }
            }
            Ok::<_, postdesk::desk::error::DeskError>(())
        })
        .expect("work the tickets");
    println!("filled {} in {:.0} s", config.database.shown(), start.elapsed().as_secs_f64());
}

fn add_agents(store: &mut Store) -> Vec<i64> {
    (0..CLIENTS)
        .map(|n| {
            let add = Add {
                email: format!("agent{n}@helpdesk.example"),
                name: format!("Agent {n}"),
                role: Role::Editor,
                password: "benchmark password".into(),
            };
            store.write(|tx| agents::add(tx, &add, Utc::now())).expect("agent").id
        })
        .collect()
}

/// A session cookie per client.
fn sign_in(config: &Config) -> Arc<Vec<String>> {
    let mut store = Store::create(&config.database).expect("store");
    let ids: Vec<i64> = store.read(agents::list).expect("agents").iter().map(|a| a.id).collect();
    let cookies = ids
        .iter()
        .cycle()
        .take(CLIENTS)
        .map(|id| {
            let session = store.write(|tx| agents::open_session(tx, *id, Utc::now())).expect("session");
            format!("postdesk_session={}", session.token)
        })
        .collect();
    Arc::new(cookies)
}

/// The kinds of page measured, each with the addresses its requests go round.
fn pages(config: &Config) -> Vec<(String, Vec<String>)> {
    let mut store = Store::create(&config.database).expect("store");
    let some = Query { limit: Some(5_000), ..Default::default() };
    let numbers: Vec<String> =
        store.read(|tx| tickets::list(tx, &some, Utc::now())).expect("tickets").into_iter().map(|t| t.number).collect();
    let page_500 = store
        .read(|tx| tickets::list(tx, &Query { limit: Some(50 * 500), ..Default::default() }, Utc::now()))
        .expect("tickets")
        .last()
        .map(|t| tickets::Cursor::of(t).to_string())
        .unwrap();
    let month = "2026-05";
    let many = |f: &dyn Fn(usize) -> String| (0..200).map(f).collect::<Vec<_>>();
    vec![
        ("/tickets".into(), vec!["/tickets".into()]),
        ("/tickets?state=open".into(), vec!["/tickets?state=open".into()]),
        ("/tickets?org=company{n}.example".into(), many(&|n| format!("/tickets?org=company{}.example", n * 17))),
        ("/tickets?owner=N&state=pending".into(), many(&|n| format!("/tickets?owner={}&state=pending", n % 20 + 1))),
        ("/tickets?after=… (page 500)".into(), vec![format!("/tickets?after={page_500}")]),
        ("/tickets/{number}".into(), numbers.iter().step_by(25).map(|n| format!("/tickets/{n}")).collect()),
        ("/customers?view=all".into(), vec!["/customers?view=all".into()]),
        ("/customers?view=with".into(), vec!["/customers?view=with".into()]),
        ("/customers?view=without".into(), vec!["/customers?view=without".into()]),
        (format!("/customers?view=all&month={month}"), vec![format!("/customers?view=all&month={month}")]),
        ("/customers?view=all&q=customer{n}".into(), many(&|n| format!("/customers?view=all&q=customer{}", n * 211))),
    ]
}

/// Requests each of `urls` once.
async fn warm(base: &str, session: &str, urls: &[String]) {
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
    for url in urls {
        let request = axum::http::Request::get(format!("{base}{url}")).header("cookie", session).body(Body::new());
        let response = client.request(request.unwrap()).await.expect("request");
        response.into_body().collect().await.expect("body");
    }
}

/// Latencies of requests to `urls` (taken in turn) by `CLIENTS` clients for `duration`
/// or until `stop`.
async fn load(
    base: &str,
    sessions: &Arc<Vec<String>>,
    urls: &[String],
    duration: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<Duration> {
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
    let urls = Arc::new(urls.to_vec());
    let until = Instant::now() + duration;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (client, urls, sessions, base) =
                (client.clone(), Arc::clone(&urls), Arc::clone(sessions), base.to_owned());
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = c;
                while Instant::now() < until && !stop.is_cancelled() {
                    let uri = format!("{base}{}", urls[n % urls.len()]);
                    n += CLIENTS;
                    let request = axum::http::Request::get(uri.as_str())
                        .header("cookie", &sessions[c])
                        .body(Body::new())
                        .unwrap();
                    let started = Instant::now();
                    let response = client.request(request).await.expect("request");
                    let status = response.status();
                    response.into_body().collect().await.expect("body");
                    assert_eq!(status, 200, "{uri}");
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        if let Ok(latencies) = task.await {
            all.extend(latencies);
        }
    }
    all
}

fn report(name: &str, latencies: &[Duration], secs: u64) {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0;
    println!("{name:<44} {:>9.1} {:>9.1} {:>9.0}", at(0.5), at(0.99), sorted.len() as f64 / secs as f64);
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Messages per second `postdesk ingest` drains from a folder of new mail.
fn drain(config: &Path, scratch: &Path, tag: &str) -> f64 {
    let dir = scratch.join(format!("drain-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..DRAIN_MESSAGES {
        std::fs::write(dir.join(format!("{i:05}.eml")), message(i, tag)).unwrap();
    }
    let start = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_postdesk"))
        .arg("--config")
        .arg(config)
        .arg("ingest")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("postdesk ingest");
    assert!(status.success(), "postdesk ingest failed");
    DRAIN_MESSAGES as f64 / start.elapsed().as_secs_f64()
}
