//! The acknowledgement sender: delivers due outbox rows over SMTP, several at a time
//! over pooled connections, records every attempt, and otherwise waits for a nudge
//! (a new row), the next due time, or shutdown. A row is marked sent as soon as the
//! server accepts it, so it is not sent twice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use std::sync::atomic::Ordering::Relaxed;

use crate::config::SmtpConfig;
use crate::core::retry::{self, Attempt, Next};
use crate::metrics::Metrics;
use crate::smtp::Smtp;
use crate::store::outbox::{self, OutboxRow};
use crate::store::{Store, StoreError};

/// Rows handed to the server at once, each on its own pooled connection. Concurrency, not
/// one fast connection, is what makes a backlog move: every SMTP transaction waits on
/// several round trips.
pub const PARALLEL: usize = 16;
const BATCH: usize = 200;
/// Even without a nudge, the outbox is looked at this often.
const POLL: Duration = Duration::from_secs(30);

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
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(&store.lock().unwrap_or_else(|p| p.into_inner())))
            .await
            .map_err(|e| StoreError::Unavailable(format!("the store task failed: {e}")))?
    }

    /// Delivers until shutdown; with `once`, until nothing is due now.
    pub async fn run(self, nudge: Arc<Notify>, shutdown: CancellationToken, once: bool) -> Result<(), StoreError> {
        loop {
            let delivered = self.deliver_due().await?;
            if once && delivered == 0 {
                return Ok(());
            }
            if delivered > 0 {
                continue;
            }
            let wait = self.until_next_due().await?;
            tokio::select! {
                _ = nudge.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    async fn until_next_due(&self) -> Result<Duration, StoreError> {
        let next = self.with_store(|s| outbox::next_due(s.conn())).await?;
        let due = next.and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc));
        Ok(due.map_or(POLL, |t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(POLL)))
    }

    /// One pass over the due rows; how many were attempted.
    async fn deliver_due(&self) -> Result<usize, StoreError> {
        let rows = self.with_store(|s| outbox::due(s.conn(), Utc::now(), BATCH)).await?;
        let count = rows.len();
        // Each attempt is recorded as soon as it ends, while others are still on the wire:
        // an accepted row is marked sent at once, so a crash cannot send it again.
        let mut attempts = futures_util::stream::iter(rows)
            .map(|row| async move {
                let attempt = self.smtp.send(&row).await;
                (row, attempt)
            })
            .buffer_unordered(PARALLEL);
        while let Some((row, attempt)) = attempts.next().await {
            self.record(row, attempt).await?;
        }
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
        self.with_store(move |s| match next {
            Next::Sent => outbox::mark_sent(s.conn(), id, now),
            Next::RetryAt(at) => outbox::mark_retry(s.conn(), id, &error, at),
            Next::Failed(why) => outbox::mark_failed(s.conn(), id, &why),
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
