//! The acknowledgement sender: claims due outbox rows, delivers them over SMTP, several
//! at a time over pooled connections, records every attempt, and otherwise waits for a
//! nudge (a new row), the next due time, or shutdown. A row is marked sent as soon as the
//! server accepts it, so it is not sent twice; a claimed row is tried by one sender only,
//! however many daemons share the database. A storage failure (database locked, disk
//! full) never ends the sender: it is logged once and retried with backoff, and an
//! attempt that could not be recorded is held until it can be.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::backoff::{Backoff, Pace};
use super::lease;
use super::metrics::Metrics;
use crate::config::SmtpConfig;
use crate::core::retry::{self, Attempt, Next};
use crate::smtp::{Smtp, SmtpError};
use crate::store::outbox::{self, OutboxRow};
use crate::store::shared::SharedStore;
use crate::store::{StoreError, Tx};

/// Rows handed to the server at once, each on its own pooled connection. Concurrency, not
/// one fast connection, is what makes a backlog move: every SMTP transaction waits on
/// several round trips.
const PARALLEL: usize = 16;
/// Rows claimed at once: a few rounds of `PARALLEL`, so that a backlog that starts being
/// written meanwhile (see `Drains`) holds up only a few records.
const BATCH: usize = 4 * PARALLEL;
/// Even without a nudge, the outbox is looked at this often: rows queued by another
/// process (`postdesk ingest -` from an MTA, another daemon) wake no one. One indexed
/// query each time.
const POLL: Duration = Duration::from_secs(5);
/// How long a claimed row is reserved for its sender. Far longer than an attempt takes
/// (each is bounded by the SMTP timeout); a sender that died gives its rows back then.
const CLAIM_SECS: i64 = 600;

/// What one pass over the outbox found.
enum Pass {
    /// Rows were attempted: look again at once.
    Delivered,
    /// Nothing due: wait this long (or for a nudge).
    Idle(Duration),
}

pub struct Sender {
    smtp: Smtp,
    give_up_after: chrono::Duration,
    store: SharedStore,
    metrics: Arc<Metrics>,
    /// This daemon, in the claims it makes (`lease::holder_name`).
    holder: Arc<str>,
    drains: Arc<Drains>,
    /// Attempts made but not yet recorded (see `record_pending`).
    pending: Mutex<Vec<Record>>,
}

/// How often a sender waiting for an OAuth2 sign-in looks again (in the store only).
const SIGN_IN_POLL: Duration = Duration::from_secs(2);

impl Sender {
    pub fn new(
        config: &SmtpConfig,
        loop_header: &str,
        store: SharedStore,
        metrics: Arc<Metrics>,
        holder: Arc<str>,
        drains: Arc<Drains>,
        keeper: Arc<crate::oauth::Keeper>,
    ) -> Result<Sender, String> {
        let smtp = Smtp::new(config, loop_header, PARALLEL, keeper)?;
        let give_up_after = config.give_up_after;
        Ok(Sender { smtp, give_up_after, store, metrics, holder, drains, pending: Mutex::default() })
    }

    /// Delivers until shutdown. With `once`, until nothing is due now, and a storage
    /// failure is returned; otherwise it is logged when it starts and when it ends, and
    /// retried with backoff, so that the sender never stops while the daemon runs.
    pub async fn run(self, nudge: Arc<Notify>, shutdown: CancellationToken, once: bool) -> Result<(), StoreError> {
        let mut backoff = Backoff::new("the acknowledgement sender");
        loop {
            let wait = match self.pass().await {
                Ok(Pass::Delivered) => continue,
                Ok(Pass::Idle(_)) if once => return Ok(()),
                Ok(Pass::Idle(wait)) => {
                    let failures = backoff.progressed();
                    if failures > 0 {
                        info!("the outbox can be used again after {failures} failed attempt(s); sending resumes");
                    }
                    wait
                }
                Err(e) if once => return Err(e),
                Err(e) => backoff.failed("store", Pace::Soon, &e),
            };
            tokio::select! {
                _ = nudge.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// Rows claimed by a postdesk of this host that ended without recording them (a crash,
    /// SIGKILL; this daemon's predecessor or a neighbour) are due again at once, not when
    /// their claim runs out. One the server had
    /// accepted just before the crash is sent again, with the same Message-ID.
    async fn release_dead_claims(&self) -> Result<(), StoreError> {
        let now = Utc::now();
        let holders = self.store.read(move |tx| outbox::claim_holders(tx, now)).await?;
        for holder in holders.into_iter().filter(|h| lease::dead_here(h)) {
            let dead = holder.clone();
            let count = self.store.write(move |tx| outbox::release_claims(tx, &dead, now)).await?;
            info!("{count} acknowledgement(s) claimed by {holder}, which ended without recording them, are due again");
        }
        Ok(())
    }

    /// One pass: deliver what is due, or say how long to wait for the next due row. Nothing
    /// is claimed while a mailbox loop writes a backlog (see `Drains`).
    async fn pass(&self) -> Result<Pass, StoreError> {
        let count = self.record_pending().await?;
        if count > 0 {
            info!("{count} delivery attempt(s) held while the database could not be written are recorded now");
        }
        self.drains.finished().await;
        if self.waiting_for_sign_in().await {
            return Ok(Pass::Idle(SIGN_IN_POLL));
        }
        self.release_dead_claims().await?;
        if self.deliver_due().await? > 0 {
            return Ok(Pass::Delivered);
        }
        Ok(Pass::Idle(self.until_next_due().await?))
    }

    /// While `[smtp]`'s OAuth2 sign-in is refused nothing is claimed nor tried: the rows
    /// wait in the outbox, their attempts not counted, and no server is contacted; said
    /// once when it begins and once when it ends.
    async fn waiting_for_sign_in(&self) -> bool {
        let waiting = self.smtp.waiting_for_sign_in().await;
        let before = self.metrics.smtp_sign_in(waiting.clone());
        match (&before, &waiting) {
            (None, Some(provider)) => warn!(
                "the acknowledgement sender: OAuth2 {provider} needs sign-in; acknowledgements wait in the outbox \
                 until an administrator runs `postdesk oauth login {provider}`"
            ),
            (Some(provider), None) => info!("the acknowledgement sender: OAuth2 {provider} is signed in again"),
            _ => {}
        }
        waiting.is_some()
    }

    async fn until_next_due(&self) -> Result<Duration, StoreError> {
        let next = self.store.read(outbox::next_due).await?;
        let due = next.and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc));
        Ok(due.map_or(POLL, |t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(POLL)))
    }

    /// Claims the due rows and tries each; how many were attempted. Each attempt is
    /// recorded as soon as the server answers, together with those that answered while
    /// the previous record was committing (group commit): the window in which a crash
    /// would send an accepted row again is about one commit.
    async fn deliver_due(&self) -> Result<usize, StoreError> {
        let holder = Arc::clone(&self.holder);
        // Unsynced like the records: a claim lost with the machine only makes its rows due.
        let rows = self
            .store
            .write_unsynced(move |tx| {
                let now = crate::store::clock(tx)?;
                outbox::claim_due(tx, &holder, now, now + chrono::Duration::seconds(CLAIM_SECS), BATCH)
            })
            .await?;
        let count = rows.len();
        let recorded: Vec<Result<(), StoreError>> = futures_util::stream::iter(rows)
            .map(|row| async move {
                let attempt = attempt(self.smtp.send(&row.acknowledgement()).await);
                self.record(row, attempt).await
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        recorded.into_iter().collect::<Result<(), _>>()?;
        Ok(count)
    }

    async fn record(&self, row: OutboxRow, attempt: Attempt) -> Result<(), StoreError> {
        let now = Utc::now();
        let queued_at = DateTime::parse_from_rfc3339(&row.created_at).map_or(now, |t| t.with_timezone(&Utc));
        let next =
            retry::after_attempt(&attempt, row.attempts + 1, queued_at, now, self.give_up_after, fastrand::f64());
        let what = match &row.ticket {
            Some(number) => format!("{} for ticket {number}", row.kind.noun()),
            None => row.kind.noun().to_owned(),
        };
        let (id, ticket, to) = (row.id, row.ticket.unwrap_or_default(), row.recipient);
        match &next {
            Next::Sent => {
                self.metrics.acks_sent.fetch_add(1, Relaxed);
                info!(ticket = %ticket, "{what} sent to {to}")
            }
            Next::RetryAt(at) => {
                warn!(ticket = %ticket, "{what} to {to} not sent, will retry at {at}: {}", error_of(&attempt))
            }
            Next::Failed(why) => {
                self.metrics.acks_failed.fetch_add(1, Relaxed);
                warn!(ticket = %ticket, "{what} to {to} failed for good: {why}")
            }
        }
        lock(&self.pending).push(Record { id, next, error: error_of(&attempt).to_owned(), at: now });
        self.record_pending().await.map(drop)
    }

    /// Writes every attempt not yet recorded in one transaction; how many. When the
    /// database refuses, they stay pending and are written before anything is claimed
    /// again: an acknowledgement the server accepted is then recorded late, not sent a
    /// second time when its claim runs out. Only a crash loses them.
    async fn record_pending(&self) -> Result<usize, StoreError> {
        let records = std::mem::take(&mut *lock(&self.pending));
        if records.is_empty() {
            return Ok(0);
        }
        let kept = records.clone();
        // Unsynced: a commit is then a write to the WAL, not an fsync, which is what keeps
        // the window between the server's acceptance and the record (a crash in it sends
        // the acknowledgement again) short; the next synced commit makes it durable.
        let written = self.store.write_unsynced(move |tx| records.iter().try_for_each(|r| r.write(tx))).await;
        if written.is_err() {
            lock(&self.pending).extend(kept.iter().cloned());
        }
        written.map(|()| kept.len())
    }
}

/// How many mailbox loops are writing a backlog now. The sender claims nothing meanwhile:
/// its records would wait behind their batches, and an acknowledgement the server accepted
/// but that is not yet recorded is sent again after a crash. A backlog is written in
/// seconds; the acknowledgements follow it.
#[derive(Default)]
pub struct Drains {
    running: std::sync::atomic::AtomicUsize,
    ended: Notify,
}

impl Drains {
    /// Marks a backlog being written until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> DrainGuard {
        self.running.fetch_add(1, Relaxed);
        DrainGuard(Arc::clone(self))
    }

    /// Returns once no backlog is being written.
    async fn finished(&self) {
        loop {
            let ended = self.ended.notified();
            if self.running.load(Relaxed) == 0 {
                return;
            }
            ended.await;
        }
    }
}

pub struct DrainGuard(Arc<Drains>);

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Relaxed) == 1 {
            self.0.ended.notify_waiters();
        }
    }
}

/// The outcome of one attempt, as the outbox row takes it.
#[derive(Clone)]
struct Record {
    id: i64,
    next: Next,
    error: String,
    at: DateTime<Utc>,
}

impl Record {
    fn write(&self, tx: &Tx) -> Result<(), StoreError> {
        match &self.next {
            Next::Sent => outbox::mark_sent(tx, self.id, self.at),
            Next::RetryAt(when) => outbox::mark_retry(tx, self.id, &self.error, *when),
            Next::Failed(why) => outbox::mark_failed(tx, self.id, why),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the retry rules make of one delivery.
fn attempt(sent: Result<(), SmtpError>) -> Attempt {
    match sent {
        Ok(()) => Attempt::Accepted,
        Err(SmtpError::Transient(e)) => Attempt::Transient(e),
        Err(SmtpError::Permanent(e)) => Attempt::Permanent(e),
    }
}

fn error_of(attempt: &Attempt) -> &str {
    match attempt {
        Attempt::Accepted => "",
        Attempt::Transient(e) | Attempt::Permanent(e) => e,
    }
}
