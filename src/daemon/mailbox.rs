//! One mailbox's loop: connect, drain the folder batch by batch (fetch with `BODY.PEEK[]`
//! → `desk::ingest::ingest_batch`, one commit → post-actions only after the commit; the
//! next batch downloads while one commits, see `pipeline`), then wait with IDLE (or
//! poll), reconnecting with backoff. It stops only at safe points:
//! between batches and while waiting, never inside a batch. This file is the connection's
//! life (lease, connect, backoff, the watchdog's view); `drain` and `idle` the rest.

mod drain;
mod idle;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::backoff::{Backoff, Pace};
use super::lease::Lease;
use super::sender::DrainGuard;
use super::Shared;
use crate::config::{After, Config, MailboxConfig};
use crate::imap::{self, ImapError, Retry};
use crate::store::{self, StoreError};

#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error(transparent)]
    Imap(#[from] ImapError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct MailboxLoop {
    config: Arc<Config>,
    mailbox: MailboxConfig,
    shared: Shared,
    lease: Lease,
    backoff: Backoff,
    /// Whether the last failure was the database's: then nothing is fetched until it
    /// takes a write again.
    store_down: bool,
    /// Cancelled at shutdown, or when this daemon lost the mailbox's lease: the session
    /// stops at its next safe point.
    stop: CancellationToken,
    /// How long one IDLE lasts, and how long its start and end may take.
    idle_bounds: (Duration, Duration),
    /// Held until the first look at the folder is over (drained, or not possible now),
    /// so that a daemon starting on a backlog writes it before sending acknowledgements.
    first_drain: Option<DrainGuard>,
}

impl MailboxLoop {
    pub fn new(config: Arc<Config>, mailbox: MailboxConfig, shared: Shared, holder: Arc<str>) -> MailboxLoop {
        let lease = Lease::new(shared.store.clone(), &mailbox.name, holder);
        let (backoff, stop) = (Backoff::new(&mailbox.name), shared.shutdown.child_token());
        let (idle_bounds, first_drain) = (idle::bounds(), Some(shared.drains.begin()));
        MailboxLoop { config, mailbox, shared, lease, backoff, store_down: false, stop, idle_bounds, first_drain }
    }

    /// Watches until shutdown (with `once`, until the folder is drained). Whether the
    /// mailbox ended well (always, unless `once` met an error).
    pub async fn watch(mut self, once: bool) -> bool {
        let shutdown = self.shared.shutdown.clone();
        loop {
            if self.store_down && !self.database_writable().await {
                self.first_drain = None;
                if shutdown.is_cancelled() {
                    return true;
                }
                continue;
            }
            if !self.lease.hold(once, &shutdown).await {
                self.first_drain = None;
                if once || shutdown.is_cancelled() {
                    return true;
                }
                continue;
            }
            self.stop = shutdown.child_token();
            let heartbeat = self.lease.keep(self.stop.clone());
            let result = self.session(once).await;
            self.first_drain = None;
            heartbeat.abort();
            if shutdown.is_cancelled() || (once && result.is_ok()) {
                self.lease.give_up().await;
            }
            match result {
                Ok(()) if once || shutdown.is_cancelled() => return true,
                // The lease was lost (another daemon took it over): stand by.
                Ok(()) => {}
                Err(e) if once => {
                    error!(mailbox = %self.mailbox.name, "cannot drain {}: {e}", self.mailbox.name);
                    return false;
                }
                Err(WatchError::Imap(ImapError::NeedsSignIn { provider, message })) => {
                    self.wait_for_sign_in(&provider, &message).await;
                }
                Err(e) => {
                    let delay = self.went_down(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => return true,
                    }
                }
            }
        }
    }

    /// After a storage failure, whether the database takes a write again: until it does,
    /// no connection is made and no message downloaded for nothing. Waits the backoff
    /// when it does not (or until shutdown); says once when it does.
    async fn database_writable(&mut self) -> bool {
        match self.shared.store.with_writer(|s| s.check_writable()).await {
            Ok(()) => {
                info!(mailbox = %self.mailbox.name, "{}: the database can be written again", self.mailbox.name);
                self.store_down = false;
                true
            }
            Err(e) => {
                let delay = self.went_down(&WatchError::Store(e));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = self.shared.shutdown.cancelled() => {}
                }
                false
            }
        }
    }

    /// Logs a new kind of failure once; the delay before the next attempt.
    fn went_down(&mut self, e: &WatchError) -> Duration {
        let (kind, pace) = match e {
            WatchError::Imap(e) if e.retry() == Retry::Slowly => (e.kind(), Pace::Slowly),
            WatchError::Imap(e) => (e.kind(), Pace::Soon),
            WatchError::Store(_) => ("store", Pace::Soon),
        };
        self.store_down = matches!(e, WatchError::Store(_));
        self.shared.metrics.mailbox(&self.mailbox.name, |h| {
            h.connected = false;
            h.busy_since = None;
        });
        self.backoff.failed(kind, pace, e)
    }

    /// Until `postdesk oauth login` stored a new sign-in for `provider`: said once, shown in
    /// the status and metrics, and nothing is sent to the provider or the mail server.
    async fn wait_for_sign_in(&mut self, provider: &str, message: &str) {
        let name = &self.mailbox.name;
        error!(mailbox = %name, "{name}: {message}; waiting for the sign-in (nothing is tried meanwhile)");
        self.shared.metrics.mailbox(name, |h| {
            h.connected = false;
            h.busy_since = None;
            h.needs_sign_in = Some(provider.to_owned());
        });
        self.shared.keeper.wait_for_sign_in(provider, &self.shared.shutdown).await;
        self.shared.metrics.mailbox(name, |h| h.needs_sign_in = None);
        if !self.shared.shutdown.is_cancelled() {
            info!(mailbox = %name, "{name}: OAuth2 {provider} is signed in again: connecting");
        }
    }

    fn came_up(&mut self) {
        let m = &self.mailbox;
        self.shared.metrics.mailbox(&m.name, |h| h.connected = true);
        if self.backoff.recovered() {
            self.shared.metrics.reconnects.fetch_add(1, Relaxed);
            info!(mailbox = %m.name, "{}: connected again to {}:{}", m.name, m.host, m.port)
        } else {
            info!(mailbox = %m.name, "{}: connected to {}:{} as {}", m.name, m.host, m.port, m.username)
        }
    }

    /// One connection: set up, then drain and wait until shutdown (or once drained).
    async fn session(&mut self, once: bool) -> Result<(), WatchError> {
        let m = self.mailbox.clone();
        self.busy(true);
        let credential = self.shared.keeper.credential(&m.login).await.map_err(ImapError::from)?;
        let mut session = match imap::connect(&m, &credential).await {
            Err(e @ ImapError::Auth(..)) => {
                self.shared.keeper.refused(&m.login, &credential).await;
                return Err(e.into());
            }
            connected => connected?,
        };
        let caps = imap::capabilities(&mut session).await?;
        if m.after == After::Move {
            imap::ensure_folder(&mut session, &m.processed_folder).await?;
        }
        imap::ensure_folder(&mut session, &m.failed_folder).await?;
        let uidvalidity = imap::select(&mut session, &m.folder).await?;
        self.came_up();
        let name = m.name.clone();
        if let Some(old) = self.shared.store.write(move |tx| store::record_uidvalidity(tx, &name, uidvalidity)).await? {
            warn!(mailbox = %m.name, "{}: UIDVALIDITY changed from {old} to {uidvalidity}; known messages will be recognised by Message-ID", m.name);
        }
        loop {
            self.drain(&mut session, uidvalidity, caps).await?;
            self.first_drain = None;
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
        self.shared.metrics.mailbox(&self.mailbox.name, |h| h.busy_since = busy.then_some(now));
    }
}
