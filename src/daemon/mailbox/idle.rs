//! Waiting for new mail: IDLE where the server has it (bounded, so that a server that
//! stopped answering is noticed), else a sleep of the poll interval.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tracing::debug;

use super::{MailboxLoop, WatchError};
use crate::imap::{Capabilities, ImapError, Session};

/// IDLE is left and entered again this often, each step bounded by `IDLE_STEP`: a server
/// that stopped answering (or a half-open connection) is noticed within two minutes
/// instead of at the 29-minute limit of RFC 2177.
const IDLE_RENEW: Duration = Duration::from_secs(100);
const IDLE_STEP: Duration = Duration::from_secs(15);
/// Internal, for the integration tests only (not a setting for users, and not under the
/// `POSTDESK_` prefix, which the configuration claims): `RENEW,STEP` in
/// seconds instead of `IDLE_RENEW` and `IDLE_STEP`, so that a stall shows in seconds.
const IDLE_BOUNDS_FOR_TESTS: &str = "PD_TEST_IDLE_SECS";

impl MailboxLoop {
    /// Waits for new mail with IDLE where the server has it, else sleeps the poll interval.
    pub(super) async fn wait_for_mail(&self, session: Session, caps: Capabilities) -> Result<Session, WatchError> {
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
        let (renew, step) = self.idle_bounds;
        debug!(mailbox = %self.mailbox.name, "{}: waiting for new mail in IDLE", self.mailbox.name);
        let mut idle = session.idle();
        let stalled = |what| {
            self.shared.metrics.imap_stalls.fetch_add(1, Relaxed);
            ImapError::Timeout(what)
        };
        tokio::time::timeout(step, idle.init())
            .await
            .map_err(|_| stalled("starting IDLE (the server stopped answering)"))?
            .map_err(|e| ImapError::Protocol("starting IDLE", e.to_string()))?;
        let (wait, _interrupt) = idle.wait_with_timeout(renew);
        let woke = tokio::select! {
            r = wait => r.map(|_| ()),
            _ = self.stop.cancelled() => Ok(()),
        };
        woke.map_err(|e| ImapError::Protocol("waiting in IDLE", e.to_string()))?;
        let session = tokio::time::timeout(step, idle.done())
            .await
            .map_err(|_| stalled("ending IDLE (the server stopped answering)"))?
            .map_err(|e| ImapError::Protocol("ending IDLE", e.to_string()))?;
        Ok(session)
    }
}

/// `IDLE_RENEW` and `IDLE_STEP`, unless a test shortened them.
pub(super) fn bounds() -> (Duration, Duration) {
    let shortened = std::env::var(IDLE_BOUNDS_FOR_TESTS).ok().and_then(|v| {
        let (renew, step) = v.split_once(',')?;
        Some((Duration::from_secs(renew.parse().ok()?), Duration::from_secs(step.parse().ok()?)))
    });
    shortened.unwrap_or((IDLE_RENEW, IDLE_STEP))
}
