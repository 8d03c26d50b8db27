//! The daemon: one task per configured mailbox. Each drains its folder in batches
//! (fetch with `BODY.PEEK[]` → group-committed ingest → post-action only after the
//! commit), then waits with IDLE (or polls), reconnecting with jittered backoff. It stops
//! only at safe points: between batches and while waiting, never inside a batch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::config::{After, Config, MailboxConfig};
use crate::imap::{self, Capabilities, ImapError, Session};
use crate::ingest::{self, Batch, Outcome, Prepared, Source};
use crate::metrics::Metrics;
use crate::outbox::Sender;
use crate::service;
use crate::store::{self, Store, StoreError};
use futures_util::future::Either;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

/// IDLE is re-issued before the 29 minutes after which RFC 2177 lets a server drop us.
const IDLE_RENEW: Duration = Duration::from_secs(25 * 60);
const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// The bytes of whole messages one batch may hold (besides its count limit), so that two
/// batches in memory (one committing, one downloading) stay far below any memory limit.
const BATCH_BYTES: u64 = 64 << 20;
/// What a message over the size limit costs in a batch: only its header is fetched.
const HEADER_ONLY_BYTES: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error(transparent)]
    Imap(#[from] ImapError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Watches every mailbox until `shutdown` (or, with `once`, until each backlog is drained).
/// With `once`, an error for any mailbox makes the whole run fail after the others finish.
pub async fn run(config: Arc<Config>, shutdown: CancellationToken, once: bool) -> anyhow::Result<()> {
    anyhow::ensure!(!config.mailboxes.is_empty(), "no [[mailbox]] is configured: there is nothing to watch");
    // Open (and migrate) before anything starts, so a bad database stops us at once.
    drop(Store::open(&config.database_path)?);
    let nudge = Arc::new(Notify::new());
    let metrics = Arc::new(Metrics::default());
    let sender = match &config.smtp {
        Some(smtp) => {
            let store = Store::open(&config.database_path)?;
            let sender = Sender::new(smtp, &config.policy.loop_header, store).map_err(anyhow::Error::msg)?;
            Some(sender.with_metrics(Arc::clone(&metrics)))
        }
        None => {
            warn!("no [smtp] section is configured: acknowledgements wait in the outbox");
            None
        }
    };
    let tracker = TaskTracker::new();
    let mut tasks = Vec::new();
    for mailbox in &config.mailboxes {
        let links = Links { shutdown: shutdown.clone(), nudge: Arc::clone(&nudge), metrics: Arc::clone(&metrics) };
        let watcher = Watcher::new(Arc::clone(&config), mailbox.clone(), links)?;
        tasks.push(tracker.spawn(watcher.watch(once)));
    }
    if let Some(addr) = config.metrics_listen {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("metrics.listen {addr}: {e}"))?;
        info!("serving metrics on http://{addr}/metrics");
        let (metrics, db, shutdown) = (Arc::clone(&metrics), config.database_path.clone(), shutdown.clone());
        tracker.spawn(service::serve_metrics(listener, metrics, db, shutdown));
    }
    // Once, the outbox is drained after the mailboxes, so it sends what they queued.
    let sending = sender.map(|s| {
        let run = s.run(Arc::clone(&nudge), shutdown.clone(), once);
        if once {
            Either::Left(run)
        } else {
            Either::Right(tracker.spawn(run))
        }
    });
    tracker.close();
    if !once {
        service::supervise(&tasks, &metrics, &config.database_path, &shutdown).await;
    }
    let mut failed = 0;
    for task in tasks {
        if !task.await.unwrap_or(false) {
            failed += 1;
        }
    }
    match sending {
        Some(Either::Left(run)) => run.await?,
        Some(Either::Right(task)) => task.await??,
        None => {}
    }
    anyhow::ensure!(failed == 0, "{failed} mailbox(es) could not be drained");
    Ok(())
}

/// What a mailbox loop shares with the rest of the daemon.
struct Links {
    shutdown: CancellationToken,
    /// Woken when a batch queued acknowledgements.
    nudge: Arc<Notify>,
    metrics: Arc<Metrics>,
}

struct Watcher {
    config: Arc<Config>,
    mailbox: MailboxConfig,
    store: Arc<Mutex<Store>>,
    links: Links,
    /// The kind of the last connection error, so each state change is logged once.
    down: Option<&'static str>,
    failures: u32,
}

impl Watcher {
    fn new(config: Arc<Config>, mailbox: MailboxConfig, links: Links) -> Result<Watcher, StoreError> {
        let store = Arc::new(Mutex::new(Store::open(&config.database_path)?));
        Ok(Watcher { config, mailbox, store, links, down: None, failures: 0 })
    }

    /// Whether the mailbox ended well (always, unless `once` met an error).
    async fn watch(mut self, once: bool) -> bool {
        loop {
            match self.session(once).await {
                Ok(()) => return true,
                Err(e) if once => {
                    error!(mailbox = %self.mailbox.name, "cannot drain {}: {e}", self.mailbox.name);
                    return false;
                }
                Err(e) => {
                    let delay = self.went_down(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.links.shutdown.cancelled() => return true,
                    }
                }
            }
        }
    }

    /// Logs a new kind of failure once; the delay before the next attempt.
    fn went_down(&mut self, e: &WatchError) -> Duration {
        let kind = match e {
            WatchError::Imap(e) => e.kind(),
            WatchError::Store(_) => "store",
        };
        let delay = backoff(self.failures, matches!(e, WatchError::Imap(e) if e.is_auth()), fastrand::f64());
        self.links.metrics.mailbox(&self.mailbox.name, |h| {
            h.connected = false;
            h.busy_since = None;
        });
        if self.down != Some(kind) {
            warn!(mailbox = %self.mailbox.name, "{}: {e}; retrying with backoff (next in {}s)", self.mailbox.name, delay.as_secs());
            self.down = Some(kind);
        } else {
            debug!(mailbox = %self.mailbox.name, "still failing: {e}; next attempt in {}s", delay.as_secs());
        }
        self.failures = self.failures.saturating_add(1);
        delay
    }

    fn came_up(&mut self) {
        let m = &self.mailbox;
        self.links.metrics.mailbox(&m.name, |h| h.connected = true);
        if self.down.is_some() {
            self.links.metrics.reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        match self.down.take() {
            Some(_) => {
                info!(mailbox = %m.name, "{}: connected again to {}:{}", m.name, m.host, m.port)
            }
            None => {
                info!(mailbox = %m.name, "{}: connected to {}:{} as {}", m.name, m.host, m.port, m.username)
            }
        }
        self.failures = 0;
    }

    /// One connection: set up, then drain and wait until shutdown (or once drained).
    async fn session(&mut self, once: bool) -> Result<(), WatchError> {
        let m = self.mailbox.clone();
        self.busy(true);
        let mut session = imap::connect(&m).await?;
        let caps = imap::capabilities(&mut session).await?;
        if m.after == After::Move {
            imap::ensure_folder(&mut session, &m.processed_folder).await?;
        }
        imap::ensure_folder(&mut session, &m.failed_folder).await?;
        let uidvalidity = imap::select(&mut session, &m.folder).await?;
        self.came_up();
        let name = m.name.clone();
        if let Some(old) = self.with_store(move |s| store::record_uidvalidity(s.conn(), &name, uidvalidity)).await? {
            warn!(mailbox = %m.name, "{}: UIDVALIDITY changed from {old} to {uidvalidity}; known messages will be recognised by Message-ID", m.name);
        }
        loop {
            self.drain(&mut session, uidvalidity, caps).await?;
            if once || self.links.shutdown.is_cancelled() {
                imap::logout(session).await;
                return Ok(());
            }
            self.busy(false);
            session = self.wait_for_mail(session, caps).await?;
            self.busy(true);
            if self.links.shutdown.is_cancelled() {
                imap::logout(session).await;
                return Ok(());
            }
        }
    }

    /// Marks a step under way (or done), for the watchdog: a step that never ends is a hang.
    fn busy(&self, busy: bool) {
        let now = Utc::now().timestamp();
        self.links.metrics.mailbox(&self.mailbox.name, |h| h.busy_since = busy.then_some(now));
    }

    /// Runs `f` on the store in a blocking thread; it goes on while the caller does IMAP.
    fn spawn_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> JoinHandle<Result<T, StoreError>> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(&mut store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())))
    }

    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        joined(self.spawn_store(f).await)
    }

    /// Ingests everything waiting in the folder, batch by batch.
    async fn drain(&mut self, session: &mut Session, uidvalidity: u32, caps: Capabilities) -> Result<(), WatchError> {
        let m = self.mailbox.clone();
        loop {
            let uids = imap::waiting(session, m.after == After::Seen).await?;
            let sources: Vec<(u32, Source)> = uids.iter().map(|&u| (u, Source::imap(&m, uidvalidity, u))).collect();
            let (done, todo) = self
                .with_store(move |s| {
                    let mut split = (Vec::new(), Vec::new());
                    for (uid, source) in sources {
                        if store::is_processed(s.conn(), &source.identity)? {
                            split.0.push(uid);
                        } else {
                            split.1.push(uid);
                        }
                    }
                    Ok(split)
                })
                .await?;
            if !done.is_empty() {
                info!(mailbox = %m.name, "{}: {} message(s) were committed before a restart; finishing their post-action", m.name, done.len());
                post_actions(session, &m, caps, &done, &[]).await?;
            }
            // Pipelined: batch N commits (and fsyncs) while batch N+1 is fetched; N's
            // post-action follows its commit.
            let mut in_flight: Option<Committing> = None;
            let sizes = if todo.is_empty() { HashMap::new() } else { imap::sizes(session, &todo).await? };
            let limit = self.config.policy.max_message_bytes;
            let chunks = batches(&todo, &sizes, self.config.batch_size, BATCH_BYTES, limit);
            let actor = match chunks.len() > 1 {
                true => Some(PostActor::start(&m, caps, uidvalidity).await?),
                false => None,
            };
            for chunk in &chunks {
                if self.links.shutdown.is_cancelled() {
                    break;
                }
                let started = Instant::now();
                let fetched = self.fetch_chunk(session, uidvalidity, chunk, &sizes).await;
                if let Some(previous) = in_flight.take() {
                    self.finish_chunk(session, actor.as_ref(), previous, caps).await?;
                }
                in_flight = Some(Committing { task: self.commit_chunk(fetched?), started });
            }
            if let Some(last) = in_flight.take() {
                self.finish_chunk(session, actor.as_ref(), last, caps).await?;
            }
            if let Some(actor) = actor {
                actor.finish().await?;
            }
            if self.links.shutdown.is_cancelled() {
                return Ok(());
            }
            let name = m.name.clone();
            let now = Utc::now();
            self.with_store(move |s| store::record_poll(s.conn(), &name, now)).await?;
            self.links.metrics.mailbox(&m.name, |h| h.last_poll = Some(now.timestamp()));
            if todo.is_empty() {
                return Ok(());
            }
        }
    }

    /// Downloads one batch — whole messages, or only the header of one over the size limit —
    /// and parses it on a blocking thread, while the previous batch may still be committing.
    async fn fetch_chunk(
        &self,
        session: &mut Session,
        uidvalidity: u32,
        uids: &[u32],
        sizes: &HashMap<u32, u32>,
    ) -> Result<Vec<Item>, WatchError> {
        let m = &self.mailbox;
        let limit = self.config.policy.max_message_bytes;
        let (small, large): (Vec<u32>, Vec<u32>) =
            uids.iter().partition(|u| sizes.get(u).is_some_and(|&s| s as usize <= limit));
        let mut bodies = imap::bodies(session, &small).await?;
        let mut headers = if large.is_empty() { HashMap::new() } else { imap::headers(session, &large).await? };
        // A message expunged by someone else between SEARCH and FETCH is simply gone.
        let mut fetched = Vec::with_capacity(uids.len());
        for &uid in uids {
            let source = Source::imap(m, uidvalidity, uid);
            if let Some(raw) = bodies.remove(&uid) {
                fetched.push((uid, raw, source, None));
            } else if let Some(raw) = headers.remove(&uid) {
                let reason = format!(
                    "message is {} bytes, over the limit of {limit}; its header is kept here, the message in folder {}",
                    sizes[&uid], m.failed_folder
                );
                fetched.push((uid, raw, source, Some(reason)));
            }
        }
        let config = Arc::clone(&self.config);
        let items = tokio::task::spawn_blocking(move || {
            let prepare = |(uid, raw, source, too_large): (u32, Vec<u8>, Source, Option<String>)| {
                let prepared = match too_large {
                    Some(reason) => Prepared::rejected(reason),
                    None => ingest::prepare(&raw, &config.policy),
                };
                Item { uid, raw, source, prepared }
            };
            fetched.into_iter().map(prepare).collect()
        })
        .await;
        Ok(joined(items.map(Ok))?)
    }

    /// Ingests and commits one batch in the background.
    fn commit_chunk(&self, items: Vec<Item>) -> JoinHandle<Result<Vec<(u32, Outcome)>, StoreError>> {
        let config = Arc::clone(&self.config);
        self.spawn_store(move |store| {
            let now = Utc::now();
            let mut batch = Batch::begin(store, &config)?;
            let mut outcomes = Vec::with_capacity(items.len());
            for item in &items {
                let report = batch.ingest_prepared(&item.raw, &item.prepared, &item.source, now)?;
                outcomes.push((item.uid, report.outcome));
            }
            batch.commit()?;
            Ok(outcomes)
        })
    }

    /// After a batch's commit: logs, metrics, the outbox nudge, and the post-actions.
    async fn finish_chunk(
        &self,
        session: &mut Session,
        actor: Option<&PostActor>,
        committing: Committing,
        caps: Capabilities,
    ) -> Result<(), WatchError> {
        let m = &self.mailbox;
        let outcomes = joined(committing.task.await)?;
        if outcomes.iter().any(|(_, o)| matches!(o, Outcome::Created { ack, .. } if ack == "queued")) {
            self.links.nudge.notify_one();
        }
        let seconds = committing.started.elapsed().as_secs_f64();
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        for (uid, outcome) in &outcomes {
            self.links.metrics.record(outcome, seconds);
            info!(mailbox = %m.name, uid, "{} UID {uid}: {outcome}", m.name);
            if matches!(outcome, Outcome::Failed { .. }) {
                failed.push(*uid)
            } else {
                ok.push(*uid)
            }
        }
        debug!(mailbox = %m.name, "{}: committed a batch of {} message(s), {} failed", m.name, outcomes.len(), failed.len());
        match actor {
            Some(actor) => actor
                .queue
                .send((ok, failed))
                .map_err(|_| ImapError::Protocol("applying post-actions", "the connection ended".to_owned()))?,
            None => post_actions(session, m, caps, &ok, &failed).await?,
        }
        Ok(())
    }

    /// Waits for new mail with IDLE where the server has it, else sleeps the poll interval.
    async fn wait_for_mail(&self, session: Session, caps: Capabilities) -> Result<Session, WatchError> {
        if !(caps.idle && self.mailbox.idle) {
            tokio::select! {
                _ = tokio::time::sleep(self.mailbox.poll_interval) => {}
                _ = self.links.shutdown.cancelled() => {}
            }
            return Ok(session);
        }
        let mut idle = session.idle();
        tokio::time::timeout(Duration::from_secs(60), idle.init())
            .await
            .map_err(|_| ImapError::Timeout("starting IDLE"))?
            .map_err(|e| ImapError::Protocol("starting IDLE", e.to_string()))?;
        let (wait, _interrupt) = idle.wait_with_timeout(IDLE_RENEW);
        let woke = tokio::select! {
            r = wait => r.map(|_| ()),
            _ = self.links.shutdown.cancelled() => Ok(()),
        };
        woke.map_err(|e| ImapError::Protocol("waiting in IDLE", e.to_string()))?;
        let session = tokio::time::timeout(Duration::from_secs(60), idle.done())
            .await
            .map_err(|_| ImapError::Timeout("ending IDLE"))?
            .map_err(|e| ImapError::Protocol("ending IDLE", e.to_string()))?;
        Ok(session)
    }
}

/// After the commit: failed messages to the failed folder, the rest get the configured
/// post-action.
async fn post_actions(
    session: &mut Session,
    m: &MailboxConfig,
    caps: Capabilities,
    ok: &[u32],
    failed: &[u32],
) -> Result<(), ImapError> {
    if !failed.is_empty() {
        imap::move_to(session, failed, &m.failed_folder, caps).await?;
    }
    if ok.is_empty() {
        return Ok(());
    }
    match m.after {
        After::Seen => imap::mark_seen(session, ok).await,
        After::Move => imap::move_to(session, ok, &m.processed_folder, caps).await,
        After::Delete => imap::delete(session, ok, caps).await,
    }
}

/// A second connection that applies post-actions while the first fetches: during a
/// backlog Dovecot moves batch N while batch N+1 is downloaded.
struct PostActor {
    queue: mpsc::UnboundedSender<(Vec<u32>, Vec<u32>)>,
    task: JoinHandle<Result<(), ImapError>>,
}

impl PostActor {
    async fn start(m: &MailboxConfig, caps: Capabilities, uidvalidity: u32) -> Result<PostActor, ImapError> {
        let mut session = imap::connect(m).await?;
        if imap::select(&mut session, &m.folder).await? != uidvalidity {
            return Err(ImapError::Protocol("opening the post-action connection", "UIDVALIDITY changed".to_owned()));
        }
        let (queue, mut batches) = mpsc::unbounded_channel::<(Vec<u32>, Vec<u32>)>();
        let m = m.clone();
        let task = tokio::spawn(async move {
            while let Some((ok, failed)) = batches.recv().await {
                post_actions(&mut session, &m, caps, &ok, &failed).await?;
            }
            imap::logout(session).await;
            Ok(())
        });
        Ok(PostActor { queue, task })
    }

    /// Waits until every queued post-action is done.
    async fn finish(self) -> Result<(), ImapError> {
        drop(self.queue);
        self.task.await.map_err(|e| ImapError::Protocol("applying post-actions", e.to_string()))?
    }
}

/// One fetched message on its way into a batch.
struct Item {
    uid: u32,
    raw: Vec<u8>,
    source: Source,
    prepared: Prepared,
}

/// A batch being committed in the background.
struct Committing {
    task: JoinHandle<Result<Vec<(u32, Outcome)>, StoreError>>,
    started: Instant,
}

fn joined<T>(result: Result<Result<T, StoreError>, tokio::task::JoinError>) -> Result<T, StoreError> {
    result.map_err(|e| StoreError::Unavailable(format!("the store task failed: {e}")))?
}

/// Splits the waiting UIDs into batches of at most `count` messages and `bytes` bytes (a
/// message over `limit` costs only its header; one message alone may pass `bytes`).
/// A message whose size is unknown (expunged meanwhile) counts as nothing.
fn batches(uids: &[u32], sizes: &HashMap<u32, u32>, count: usize, bytes: u64, limit: usize) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    let mut current_bytes = 0u64;
    for &uid in uids {
        let size = sizes.get(&uid).map_or(0, |&s| u64::from(s));
        let cost = if size > limit as u64 { HEADER_ONLY_BYTES } else { size };
        if !current.is_empty() && (current.len() >= count || current_bytes + cost > bytes) {
            out.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current.push(uid);
        current_bytes += cost;
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Exponential backoff with jitter: 1 s doubling to 5 minutes; a refused login starts at
/// a minute. `jitter` in [0, 1) spreads the delay over its upper half.
fn backoff(failures: u32, auth: bool, jitter: f64) -> Duration {
    let base = if auth { 60.0 } else { 1.0 };
    let full = (base * 2f64.powi(failures.min(16) as i32)).min(BACKOFF_CAP.as_secs_f64());
    Duration::from_secs_f64(full * (0.5 + jitter / 2.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let secs = |f, auth| backoff(f, auth, 0.999_999).as_secs();
        assert_eq!([secs(0, false), secs(1, false), secs(5, false), secs(30, false)], [0, 1, 31, 299]);
        assert_eq!(secs(0, true), 59);
        assert_eq!(backoff(3, false, 0.0), Duration::from_secs(4));
    }

    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        const MB: u32 = 1 << 20;
        let sizes: HashMap<u32, u32> =
            [(1, 10), (2, 25 * MB), (3, 25 * MB), (4, 25 * MB), (5, 10), (6, 900 * MB)].into();
        let uids = [1, 2, 3, 4, 5, 6, 7];
        let limit = 30 << 20;
        assert_eq!(batches(&uids, &sizes, 200, 64 << 20, limit), vec![vec![1, 2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(batches(&uids, &sizes, 3, 64 << 20, limit), vec![vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
        // A message alone over the byte bound (the size limit raised) still makes a batch.
        assert_eq!(batches(&[2, 3], &sizes, 200, 1 << 20, limit), vec![vec![2], vec![3]]);
        assert!(batches(&[], &sizes, 200, 64 << 20, limit).is_empty());
    }
}
