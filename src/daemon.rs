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
use crate::core::ack::AckState;
use crate::core::retry;
use crate::desk::ingest::{self, Message, Outcome, Prepared, Source};
use crate::imap::{self, Capabilities, ImapError, Session};
use crate::metrics::Metrics;
use crate::outbox::Sender;
use crate::service;
use crate::store::{self, Store, StoreError};
use futures_util::future::Either;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

/// IDLE is re-issued before the 29 minutes after which RFC 2177 lets a server drop us.
/// IDLE is left and entered again this often, each step bounded by `IDLE_STEP`: a server
/// that stopped answering (or a half-open connection) is noticed within two minutes
/// instead of at the 29-minute limit of RFC 2177.
const IDLE_RENEW: Duration = Duration::from_secs(100);
const IDLE_STEP: Duration = Duration::from_secs(15);
/// A mailbox lease lasts this long and is renewed every `LEASE_RENEW`; a daemon standing
/// by looks every `LEASE_RENEW` too, so it takes over within about 40 s of the holder's end.
const LEASE: Duration = Duration::from_secs(30);
const LEASE_RENEW: Duration = Duration::from_secs(10);
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
    anyhow::ensure!(
        !config.mailboxes.is_empty() || config.smtp.is_some(),
        "neither [[mailbox]] nor [smtp] is configured: there is nothing to watch and nothing to send"
    );
    if config.mailboxes.is_empty() {
        info!("no [[mailbox]] is configured: only sending the acknowledgements that `postdesk ingest` queues");
    }
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
    let holder: Arc<str> = lease_holder().into();
    let mut tasks = Vec::new();
    let mut watched = Vec::new();
    for mailbox in &config.mailboxes {
        let links = Links {
            shutdown: shutdown.clone(),
            holder: Arc::clone(&holder),
            nudge: Arc::clone(&nudge),
            metrics: Arc::clone(&metrics),
        };
        let watcher = Watcher::new(Arc::clone(&config), mailbox.clone(), links)?;
        let task = tracker.spawn(watcher.watch(once));
        watched.push((format!("the loop of mailbox {}", mailbox.name), task.abort_handle()));
        tasks.push(task);
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
            let task = tracker.spawn(run);
            watched.push(("the acknowledgement sender".to_owned(), task.abort_handle()));
            Either::Right(task)
        }
    });
    tracker.close();
    if !once {
        service::supervise(&watched, &metrics, &config.database_path, &shutdown).await;
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
    /// Who this daemon is, in mailbox leases.
    holder: Arc<str>,
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
    /// Cancelled at shutdown, or when this daemon lost the mailbox's lease: the session
    /// stops at its next safe point.
    stop: CancellationToken,
    /// Whether another daemon holds the lease (logged once per change).
    standing_by: bool,
}

impl Watcher {
    fn new(config: Arc<Config>, mailbox: MailboxConfig, links: Links) -> Result<Watcher, StoreError> {
        let store = Arc::new(Mutex::new(Store::open(&config.database_path)?));
        let stop = links.shutdown.child_token();
        Ok(Watcher { config, mailbox, store, links, down: None, failures: 0, stop, standing_by: false })
    }

    /// Whether the mailbox ended well (always, unless `once` met an error).
    async fn watch(mut self, once: bool) -> bool {
        loop {
            if self.down == Some("store") && !self.database_writable().await {
                if self.links.shutdown.is_cancelled() {
                    return true;
                }
                continue;
            }
            if !self.hold_lease(once).await {
                if once || self.links.shutdown.is_cancelled() {
                    return true;
                }
                continue;
            }
            let heartbeat = self.keep_lease();
            let result = self.session(once).await;
            heartbeat.abort();
            if self.links.shutdown.is_cancelled() || (once && result.is_ok()) {
                self.give_up_lease().await;
            }
            match result {
                Ok(()) if once || self.links.shutdown.is_cancelled() => return true,
                // The lease was lost (another daemon took it over): stand by.
                Ok(()) => {}
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

    /// Takes (or keeps) this mailbox's lease, so that of several daemons configured with
    /// it only one watches it. Without it, waits `LEASE_RENEW` (not with `once`).
    async fn hold_lease(&mut self, once: bool) -> bool {
        let (name, holder) = (self.mailbox.name.clone(), Arc::clone(&self.links.holder));
        let taken = self
            .with_store(move |s| {
                let current = take_lease(s, &name, &holder)?;
                // A holder that was this host's and died (a crash, SIGKILL) leaves its lease
                // to expire; a restart takes it at once instead.
                if current != *holder && dead_here(&current) {
                    s.write(|tx| store::release_lease(tx, &name, &current))?;
                    return take_lease(s, &name, &holder);
                }
                Ok(current)
            })
            .await;
        let other = match taken {
            Ok(current) if *current == *self.links.holder => {
                if std::mem::take(&mut self.standing_by) {
                    info!(mailbox = %self.mailbox.name, "{}: taking over from the other daemon", self.mailbox.name);
                }
                self.stop = self.links.shutdown.child_token();
                return true;
            }
            Ok(current) => current,
            Err(e) => format!("unknown ({e})"),
        };
        if !std::mem::replace(&mut self.standing_by, true) || once {
            info!(mailbox = %self.mailbox.name, "{}: watched by another postdesk ({other}); standing by", self.mailbox.name);
        }
        if !once {
            tokio::select! {
                _ = tokio::time::sleep(LEASE_RENEW) => {}
                _ = self.links.shutdown.cancelled() => {}
            }
        }
        false
    }

    /// Renews the lease every `LEASE_RENEW` while a session runs; when another daemon
    /// holds it (this one stalled past its expiry), stops the session at its next safe
    /// point. A renewal that fails for the database keeps trying: if it stays down, the
    /// lease expires and another daemon, perhaps with a working disk, takes over.
    fn keep_lease(&self) -> JoinHandle<()> {
        let (store, stop) = (Arc::clone(&self.store), self.stop.clone());
        let (name, holder) = (self.mailbox.name.clone(), Arc::clone(&self.links.holder));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_RENEW).await;
                let (store, name_, holder_) = (Arc::clone(&store), name.clone(), Arc::clone(&holder));
                let renewed = tokio::task::spawn_blocking(move || {
                    take_lease(&mut store.lock().unwrap_or_else(|p| p.into_inner()), &name_, &holder_)
                })
                .await;
                match renewed {
                    Ok(Ok(current)) if *current != *holder => {
                        warn!(mailbox = %name, "{name}: another postdesk ({current}) took the mailbox over; stopping here");
                        stop.cancel();
                        return;
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => debug!(mailbox = %name, "{name}: cannot renew the lease now: {e}"),
                    Err(e) => debug!(mailbox = %name, "{name}: the lease task failed: {e}"),
                }
            }
        })
    }

    /// At shutdown, so that a daemon standing by takes over at once.
    async fn give_up_lease(&self) {
        let (name, holder) = (self.mailbox.name.clone(), Arc::clone(&self.links.holder));
        if let Err(e) = self.with_store(move |s| s.write(|tx| store::release_lease(tx, &name, &holder))).await {
            debug!(mailbox = %self.mailbox.name, "cannot release the lease: {e}");
        }
    }

    /// After a storage failure, whether the database takes a write again: until it does,
    /// no connection is made and no message downloaded for nothing. Waits the backoff
    /// when it does not (or until shutdown); says once when it does.
    async fn database_writable(&mut self) -> bool {
        match self.with_store(|s| s.check_writable()).await {
            Ok(()) => {
                info!(mailbox = %self.mailbox.name, "{}: the database can be written again", self.mailbox.name);
                true
            }
            Err(e) => {
                let delay = self.went_down(&WatchError::Store(e));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = self.links.shutdown.cancelled() => {}
                }
                false
            }
        }
    }

    /// Logs a new kind of failure once; the delay before the next attempt.
    fn went_down(&mut self, e: &WatchError) -> Duration {
        let kind = match e {
            WatchError::Imap(e) => e.kind(),
            WatchError::Store(_) => "store",
        };
        let delay = retry::backoff(self.failures, matches!(e, WatchError::Imap(e) if e.is_auth()), fastrand::f64());
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
        if let Some(old) =
            self.with_store(move |s| s.write(|tx| store::record_uidvalidity(tx, &name, uidvalidity))).await?
        {
            warn!(mailbox = %m.name, "{}: UIDVALIDITY changed from {old} to {uidvalidity}; known messages will be recognised by Message-ID", m.name);
        }
        loop {
            self.drain(&mut session, uidvalidity, caps).await?;
            if once || self.stop.is_cancelled() {
                imap::logout(session).await;
                return Ok(());
            }
            session = self.wait_for_mail(session, caps).await?;
            self.busy(true);
            if self.stop.is_cancelled() {
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
                        if s.read(|tx| store::is_processed(tx, &source.identity))? {
                            split.0.push(uid);
                        } else {
                            split.1.push(uid);
                        }
                    }
                    Ok(split)
                })
                .await?;
            if !done.is_empty() {
                info!(mailbox = %m.name, "{}: {} message(s) already committed are still in {}; applying their post-action", m.name, done.len(), m.folder);
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
                if self.stop.is_cancelled() {
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
            if self.stop.is_cancelled() {
                return Ok(());
            }
            let name = m.name.clone();
            let now = Utc::now();
            self.with_store(move |s| s.write(|tx| store::record_poll(tx, &name, now))).await?;
            // Only a committed write ends a run of failures: a login that works while the
            // database does not must not reset the backoff.
            self.failures = 0;
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
    ) -> Result<Chunk, WatchError> {
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
                let kept = format!("its header is kept here, the message in folder {}", m.failed_folder);
                let reason = crate::desk::ingest::oversized(u64::from(sizes[&uid]), limit, &kept);
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
                (uid, Message { raw, source, prepared })
            };
            let (uids, messages) = fetched.into_iter().map(prepare).unzip();
            Chunk { uids, messages }
        })
        .await;
        Ok(joined(items.map(Ok))?)
    }

    /// Ingests and commits one batch in the background.
    fn commit_chunk(&self, chunk: Chunk) -> JoinHandle<Result<Vec<(u32, Outcome)>, StoreError>> {
        let config = Arc::clone(&self.config);
        self.spawn_store(move |store| {
            let reports = ingest::ingest_batch(store, &config, &chunk.messages, Utc::now())?;
            Ok(chunk.uids.into_iter().zip(reports.into_iter().map(|r| r.outcome)).collect())
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
        if outcomes.iter().any(|(_, o)| matches!(o, Outcome::Created { ack: AckState::Queued, .. })) {
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
            Some(actor) => actor.queue.send((ok, failed)).map_err(|_| {
                let why = "the post-action connection ended (its error is logged above)".to_owned();
                ImapError::Protocol("applying post-actions", why)
            })?,
            None => post_actions(session, m, caps, &ok, &failed).await?,
        }
        Ok(())
    }

    /// Waits for new mail with IDLE where the server has it, else sleeps the poll interval.
    async fn wait_for_mail(&self, session: Session, caps: Capabilities) -> Result<Session, WatchError> {
        if !(caps.idle && self.mailbox.idle) {
            // A sleep cannot hang.
            self.busy(false);
            tokio::select! {
                _ = tokio::time::sleep(self.mailbox.poll_interval) => {}
                _ = self.stop.cancelled() => {}
            }
            return Ok(session);
        }
        // Each IDLE step is bounded, so one that lasts is a hang the watchdog must see.
        self.busy(true);
        let mut idle = session.idle();
        let stalled = |what| {
            self.links.metrics.imap_stalls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ImapError::Timeout(what)
        };
        tokio::time::timeout(IDLE_STEP, idle.init())
            .await
            .map_err(|_| stalled("starting IDLE (the server stopped answering)"))?
            .map_err(|e| ImapError::Protocol("starting IDLE", e.to_string()))?;
        let (wait, _interrupt) = idle.wait_with_timeout(IDLE_RENEW);
        let woke = tokio::select! {
            r = wait => r.map(|_| ()),
            _ = self.stop.cancelled() => Ok(()),
        };
        woke.map_err(|e| ImapError::Protocol("waiting in IDLE", e.to_string()))?;
        let session = tokio::time::timeout(IDLE_STEP, idle.done())
            .await
            .map_err(|_| stalled("ending IDLE (the server stopped answering)"))?
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
                if let Err(e) = post_actions(&mut session, &m, caps, &ok, &failed).await {
                    warn!(mailbox = %m.name, "{}: the post-action connection failed: {e}", m.name);
                    return Err(e);
                }
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

/// One batch fetched: each message with its UID.
struct Chunk {
    uids: Vec<u32>,
    messages: Vec<Message>,
}

/// A batch being committed in the background.
struct Committing {
    task: JoinHandle<Result<Vec<(u32, Outcome)>, StoreError>>,
    started: Instant,
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

/// Takes or renews `mailbox`'s lease for `LEASE` from now; who holds it afterwards.
fn take_lease(store: &mut Store, mailbox: &str, holder: &str) -> Result<String, StoreError> {
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(LEASE).expect("a short duration");
    store.write(|tx| store::take_lease(tx, mailbox, holder, now, until))
}

/// Who this daemon is in mailbox leases: "pid 4242 on mailhost (1f2e3d4c)".
fn lease_holder() -> String {
    format!("pid {} on {} ({:08x})", std::process::id(), host_name(), fastrand::u32(..))
}

/// Whether a lease holder was a process of this host that no longer exists.
fn dead_here(holder: &str) -> bool {
    let Some((pid, rest)) = holder.strip_prefix("pid ").and_then(|h| h.split_once(" on ")) else {
        return false;
    };
    let (Ok(pid), Some(host)) = (pid.parse::<i32>(), rest.rsplit_once(" (").map(|(h, _)| h)) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let gone =
        unsafe { libc::kill(pid, 0) } != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    host == host_name() && pid != std::process::id() as i32 && gone
}

/// This machine's name, for telling daemons apart in mailbox leases.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our buffer.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if ok {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "this host".to_owned()
    }
}

fn joined<T>(result: Result<Result<T, StoreError>, tokio::task::JoinError>) -> Result<T, StoreError> {
    result.map_err(|e| StoreError::Unavailable(format!("the store task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_dead_local_holder_is_recognised() {
        let here = host_name();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(dead_here(&format!("pid {pid} on {here} (00000001)")));
        assert!(!dead_here(&lease_holder()), "this process is alive");
        assert!(!dead_here(&format!("pid {pid} on some-other-host (00000001)")), "another host's is not ours to judge");
        assert!(!dead_here("garbage"));
    }
}
