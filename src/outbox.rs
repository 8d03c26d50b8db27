//! The acknowledgement sender: claims due outbox rows, delivers them over SMTP, several
//! at a time over pooled connections, records every attempt, and otherwise waits for a
//! nudge (a new row), the next due time, or shutdown. A row is marked sent as soon as the
//! server accepts it, so it is not sent twice; a claimed row is tried by one sender only,
//! however many daemons share the database. A storage failure (database locked, disk
//! full) never ends the sender: it is logged once and retried with backoff.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use std::sync::atomic::Ordering::Relaxed;

use crate::config::SmtpConfig;
use crate::core::retry::{self, Attempt, Next};

/// What one pass over the outbox found.
enum Pass {
    /// Rows were attempted: look again at once.
    Delivered,
    /// Nothing due: wait this long (or for a nudge).
    Idle(Duration),
}
use crate::metrics::Metrics;
use crate::smtp::Smtp;
use crate::store::outbox::{self, OutboxRow};
use crate::store::{Store, StoreError};

/// Rows handed to the server at once, each on its own pooled connection. Concurrency, not
/// one fast connection, is what makes a backlog move: every SMTP transaction waits on
/// several round trips.
pub const PARALLEL: usize = 16;
const BATCH: usize = 200;
/// Even without a nudge, the outbox is looked at this often: rows queued by another
/// process (`postdesk ingest -` from an MTA, another daemon) wake no one. One indexed
/// query each time.
const POLL: Duration = Duration::from_secs(5);
/// How long a claimed row is reserved for its sender. Far longer than an attempt takes
/// (each is bounded by the SMTP timeout); a sender that died gives its rows back then.
const CLAIM_SECS: i64 = 600;

pub struct Sender {
    smtp: Smtp,
    give_up_after: chrono::Duration,
    store: Arc<Mutex<Store>>,
    metrics: Arc<Metrics>,
}

impl Sender {
    pub fn new(config: &SmtpConfig, loop_header: &str, store: Store) -> Result<Sender, String> {
        Ok(Sender {
            smtp: Smtp::new(config, loop_header)?,
            give_up_after: config.give_up_after,
            store: Arc::new(Mutex::new(store)),
            metrics: Arc::default(),
        })
    }

    /// Counts sent and failed acknowledgements in the daemon's metrics.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Sender {
        Sender { metrics, ..self }
    }

    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(&mut store.lock().unwrap_or_else(|p| p.into_inner())))
            .await
            .map_err(|e| StoreError::Unavailable(format!("the store task failed: {e}")))?
    }

    /// Delivers until shutdown. With `once`, until nothing is due now, and a storage
    /// failure is returned; otherwise it is logged when it starts and when it ends, and
    /// retried with backoff, so that the sender never stops while the daemon runs.
    pub async fn run(self, nudge: Arc<Notify>, shutdown: CancellationToken, once: bool) -> Result<(), StoreError> {
        let mut failures = 0u32;
        loop {
            let wait = match self.pass().await {
                Ok(Pass::Delivered) => continue,
                Ok(Pass::Idle(_)) if once => return Ok(()),
                Ok(Pass::Idle(wait)) => {
                    if failures > 0 {
                        info!("the outbox can be used again after {failures} failed attempt(s); sending resumes");
                        failures = 0;
                    }
                    wait
                }
                Err(e) if once => return Err(e),
                Err(e) => {
                    let delay = retry::backoff(failures, false, fastrand::f64());
                    if failures == 0 {
                        error!("acknowledgements cannot be sent or recorded now: {e}; retrying with backoff");
                    } else {
                        debug!("the outbox still fails: {e}; next attempt in {}s", delay.as_secs());
                    }
                    failures = failures.saturating_add(1);
                    delay
                }
            };
            tokio::select! {
                _ = nudge.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// One pass: deliver what is due, or say how long to wait for the next due row.
    async fn pass(&self) -> Result<Pass, StoreError> {
        if self.deliver_due().await? > 0 {
            return Ok(Pass::Delivered);
        }
        Ok(Pass::Idle(self.until_next_due().await?))
    }

    async fn until_next_due(&self) -> Result<Duration, StoreError> {
        let next = self.with_store(|s| s.read(outbox::next_due)).await?;
        let due = next.and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc));
        Ok(due.map_or(POLL, |t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(POLL)))
    }

    /// Claims the due rows and tries each; how many were attempted. Each attempt is
    /// recorded by its own task as soon as the server answers, not behind the other
    /// sends: the window in which a crash would send an accepted row again is one commit.
    async fn deliver_due(&self) -> Result<usize, StoreError> {
        let now = Utc::now();
        let until = now + chrono::Duration::seconds(CLAIM_SECS);
        let rows = self.with_store(move |s| s.write(|tx| outbox::claim_due(tx, now, until, BATCH))).await?;
        let count = rows.len();
        let recorded: Vec<Result<(), StoreError>> = futures_util::stream::iter(rows)
            .map(|row| async move {
                let attempt = self.smtp.send(&row).await;
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
        let (id, ticket, to) = (row.id, row.ticket, row.recipient);
        match &next {
            Next::Sent => _ = self.metrics.acks_sent.fetch_add(1, Relaxed),
            Next::Failed(_) => _ = self.metrics.acks_failed.fetch_add(1, Relaxed),
            Next::RetryAt(_) => {}
        }
        match &next {
            Next::Sent => {
                info!(ticket = %ticket, "acknowledgement for ticket {ticket} sent to {to}")
            }
            Next::RetryAt(at) => {
                warn!(ticket = %ticket, "acknowledgement for ticket {ticket} to {to} not sent, will retry at {at}: {}", error_of(&attempt))
            }
            Next::Failed(why) => {
                warn!(ticket = %ticket, "acknowledgement for ticket {ticket} to {to} failed for good: {why}")
            }
        }
        let error = error_of(&attempt).to_owned();
        self.with_store(move |s| {
            s.write(|tx| match next {
                Next::Sent => outbox::mark_sent(tx, id, now),
                Next::RetryAt(at) => outbox::mark_retry(tx, id, &error, at),
                Next::Failed(why) => outbox::mark_failed(tx, id, &why),
            })
        })
        .await
    }
}

fn error_of(attempt: &Attempt) -> &str {
    match attempt {
        Attempt::Accepted => "",
        Attempt::Transient(e) | Attempt::Permanent(e) => e,
    }
}
