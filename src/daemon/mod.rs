//! `postdesk run`: one task per configured mailbox (`mailbox`, each holding its
//! mailbox's `lease`, committing one batch while fetching the next: `pipeline`), the acknowledgement `sender`, the metrics endpoint (`scrape`), the web console (`crate::web`) and
//! the service manager's view (`service`), all sharing one store handle. Shutdown is a
//! token every part watches at its safe points.

mod backoff;
mod lease;
pub use lease::host_name;
mod mailbox;
pub mod memory;
mod metrics;
mod pipeline;
mod scrape;
mod sender;
mod service;

use std::sync::Arc;

use futures_util::future::Either;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;
use crate::oauth::Keeper;
use crate::store::shared::SharedStore;
use mailbox::MailboxLoop;
use metrics::Metrics;
use sender::{Drains, Sender};

/// What every part of the daemon shares.
#[derive(Clone)]
struct Shared {
    store: SharedStore,
    /// The OAuth2 access tokens of every login.
    keeper: Arc<Keeper>,
    metrics: Arc<Metrics>,
    /// Woken when a batch queued acknowledgements.
    nudge: Arc<Notify>,
    /// Backlogs being written, which the sender lets finish first.
    drains: Arc<Drains>,
    shutdown: CancellationToken,
}

/// Serves HTTP until shutdown; a failure of the listener is logged, the daemon goes on.
async fn serve_http(
    what: &'static str,
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) {
    if let Err(e) = crate::web::serve(listener, router, shutdown).await {
        tracing::error!("{what} stopped: {e}");
    }
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
    // Opened (and migrated) before anything starts, so a bad database stops us at once.
    let store = SharedStore::open(&config.database).await?;
    let shared = Shared {
        keeper: Keeper::new(&config, Some(store.clone())),
        store,
        metrics: Arc::default(),
        nudge: Arc::default(),
        drains: Arc::default(),
        shutdown: shutdown.clone(),
    };
    let holder: Arc<str> = lease::holder_name().into();
    let sender = match &config.smtp {
        Some(smtp) => Some(
            Sender::new(
                smtp,
                &config.policy.loop_header,
                shared.store.clone(),
                Arc::clone(&shared.metrics),
                Arc::clone(&holder),
                Arc::clone(&shared.drains),
                Arc::clone(&shared.keeper),
            )
            .map_err(anyhow::Error::msg)?,
        ),
        None => {
            warn!("no [smtp] section is configured: acknowledgements wait in the outbox");
            None
        }
    };
    let tracker = TaskTracker::new();
    let mut tasks = Vec::new();
    let mut watched = Vec::new();
    for mailbox in &config.mailboxes {
        let name = format!("the loop of mailbox {}", mailbox.name);
        let watcher = MailboxLoop::new(Arc::clone(&config), mailbox.clone(), shared.clone(), Arc::clone(&holder));
        let task = tracker.spawn(watcher.watch(once));
        watched.push((name, task.abort_handle()));
        tasks.push(task);
    }
    if let Some(addr) = config.metrics_listen {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("metrics.listen {addr}: {e}"))?;
        info!("serving metrics on http://{addr}/metrics");
        let router = scrape::router(Arc::clone(&shared.metrics), shared.store.clone());
        tracker.spawn(serve_http("the metrics endpoint", listener, router, shutdown.clone()));
    }
    if let Some(web) = config.web.clone() {
        let listener = crate::web::bind(&web).await?;
        info!("serving the console on {} (http://{})", web.base_url, web.listen);
        let nudge = Some(Arc::clone(&shared.nudge));
        let router =
            crate::web::router(crate::web::Console::new(shared.store.clone(), Arc::clone(&config), web, nudge));
        let console = crate::web::serve_beside_intake(listener, router, shutdown.clone());
        tracker.spawn_blocking(move || match console.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("the web console stopped: {e}"),
            Err(_) => tracing::error!("the web console stopped: it panicked"),
        });
    }
    // Once, the outbox is drained after the mailboxes, so it sends what they queued.
    let sending = sender.map(|s| {
        let run = s.run(Arc::clone(&shared.nudge), shutdown.clone(), once);
        if once {
            Either::Left(run)
        } else {
            let task = tracker.spawn(run);
            watched.push(("the acknowledgement sender".to_owned(), task.abort_handle()));
            Either::Right(task)
        }
    });
    if !once {
        for provider in config.oauth2.keys().filter(|name| config.uses_provider(name)) {
            let keeper = Arc::clone(&shared.keeper);
            tracker.spawn(keeper.keep_fresh(provider.clone(), shutdown.clone()));
        }
    }
    tracker.close();
    if !once {
        service::supervise(&watched, &shared.metrics, &shared.store, &shutdown).await;
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
