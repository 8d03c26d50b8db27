//! Running under a service manager: sd_notify (`READY=1`, `STATUS=`, `WATCHDOG=1`,
//! `STOPPING=1`). Without `NOTIFY_SOCKET` the notifications are no-ops, so the same
//! binary runs in a terminal.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::metrics::Metrics;
use crate::store::shared::SharedStore;
use crate::store::StoreError;

/// A step (connecting, draining a backlog) taking longer than this means a hang: every
/// network call is bounded far below it.
const HUNG_AFTER_SECS: i64 = 600;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!("sd_notify failed: {e}");
    }
}

/// Says READY, then keeps STATUS current and pings the watchdog while every task (the
/// mailbox loops and the acknowledgement sender, each named) is alive and no mailbox is
/// stuck; returns at shutdown (or when all tasks ended). None of them ends while the
/// daemon runs: one that does (a bug) is logged once, counted, named in STATUS, and the
/// watchdog is withheld, so that systemd restarts the service.
pub async fn supervise(
    tasks: &[(String, AbortHandle)],
    metrics: &Metrics,
    store: &SharedStore,
    shutdown: &CancellationToken,
) {
    notify(&[NotifyState::Ready]);
    let watchdog = sd_notify::watchdog_enabled();
    let tick = watchdog.map_or(Duration::from_secs(10), |w| w / 2).min(Duration::from_secs(10));
    let mut reported = 0;
    loop {
        let stopped: Vec<&str> = tasks.iter().filter(|(_, t)| t.is_finished()).map(|(n, _)| n.as_str()).collect();
        for name in &stopped[reported..] {
            error!("{name} has stopped; withholding the watchdog so that the service manager restarts postdesk");
            metrics.tasks_stopped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        reported = stopped.len();
        let stuck = hung(metrics);
        let mut status = status(metrics, store).await;
        if !stopped.is_empty() {
            status = format!("STOPPED: {}; {status}", stopped.join(", "));
        }
        if stopped.is_empty() && !stuck && watchdog.is_some() {
            notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
        } else {
            notify(&[NotifyState::Status(&status)]);
        }
        if stuck {
            warn!("a mailbox loop hangs; withholding the watchdog ping");
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.cancelled() => break,
        }
        if !tasks.is_empty() && tasks.iter().all(|(_, t)| t.is_finished()) {
            break;
        }
    }
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn hung(metrics: &Metrics) -> bool {
    let now = chrono::Utc::now().timestamp();
    metrics.mailboxes().values().any(|h| h.busy_since.is_some_and(|t| now - t > HUNG_AFTER_SECS))
}

/// "2/2 mailboxes connected, 17 tickets today, 0 acknowledgements waiting"; "1/2
/// mailboxes connected, 1 needs OAuth sign-in: m365, …" while a sign-in was refused.
async fn status(metrics: &Metrics, store: &SharedStore) -> String {
    let mailboxes = metrics.mailboxes();
    let connected = mailboxes.values().filter(|h| h.connected).count();
    let waiting_for: Vec<&str> = mailboxes.values().filter_map(|h| h.needs_sign_in.as_deref()).collect();
    let sign_in = match waiting_for.len() {
        0 => String::new(),
        n => {
            let mut providers = waiting_for.clone();
            providers.sort_unstable();
            providers.dedup();
            format!(", {n} {} OAuth sign-in: {}", if n == 1 { "needs" } else { "need" }, providers.join(", "))
        }
    };
    let smtp = metrics.smtp_needs_sign_in().map(|p| format!(", SMTP needs OAuth sign-in: {p}")).unwrap_or_default();
    let (today, waiting) = counts(store).await.unwrap_or((0, 0));
    format!(
        "{connected}/{} mailboxes connected{sign_in}{smtp}, {today} tickets today, {waiting} acknowledgements waiting",
        mailboxes.len()
    )
}

/// Tickets opened today and acknowledgements waiting.
pub async fn counts(store: &SharedStore) -> Result<(i64, i64), StoreError> {
    let today = chrono::Utc::now().date_naive();
    store.read(move |tx| crate::store::counts(tx, today)).await
}
