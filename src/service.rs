//! Running under a service manager: sd_notify (`READY=1`, `STATUS=`, `WATCHDOG=1`,
//! `STOPPING=1`) and the Prometheus endpoint. Without `NOTIFY_SOCKET` the notifications
//! are no-ops, so the same binary runs in a terminal.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::metrics::Metrics;
use crate::store::Store;

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
    database: &Path,
    shutdown: &CancellationToken,
) {
    notify(&[NotifyState::Ready]);
    let watchdog = sd_notify::watchdog_enabled();
    let tick = watchdog.map_or(Duration::from_secs(10), |w| w / 2).min(Duration::from_secs(10));
    let mut store = Store::open(database).ok();
    let mut reported = 0;
    loop {
        let stopped: Vec<&str> = tasks.iter().filter(|(_, t)| t.is_finished()).map(|(n, _)| n.as_str()).collect();
        for name in &stopped[reported..] {
            error!("{name} has stopped; withholding the watchdog so that the service manager restarts postdesk");
            metrics.tasks_stopped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        reported = stopped.len();
        let stuck = hung(metrics);
        let mut status = status(metrics, store.as_mut());
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

/// "2/2 mailboxes connected, 17 tickets today, 0 acknowledgements waiting".
fn status(metrics: &Metrics, store: Option<&mut Store>) -> String {
    let mailboxes = metrics.mailboxes();
    let connected = mailboxes.values().filter(|h| h.connected).count();
    let (today, waiting) = store.map_or((0, 0), |s| counts(s).unwrap_or((0, 0)));
    format!(
        "{connected}/{} mailboxes connected, {today} tickets today, {waiting} acknowledgements waiting",
        mailboxes.len()
    )
}

fn counts(store: &mut Store) -> Result<(i64, i64), crate::store::StoreError> {
    store.read(|tx| crate::store::counts(tx, chrono::Utc::now().date_naive()))
}

/// A minimal HTTP endpoint: every request gets the metrics (GET /metrics is the norm).
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    database: PathBuf,
    shutdown: CancellationToken,
) {
    loop {
        let (mut stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    warn!("metrics endpoint: {e}");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let metrics = Arc::clone(&metrics);
        let database = database.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 2048];
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut request)).await;
            let depth = tokio::task::spawn_blocking(move || {
                let mut store = Store::open_existing(&database).ok()?;
                counts(&mut store).ok().map(|(_, waiting)| waiting)
            })
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
            let body = metrics.render(depth);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
