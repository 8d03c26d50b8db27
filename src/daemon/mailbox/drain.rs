//! Draining the folder: what is waiting, what was committed earlier but not moved, and
//! the rest in batches through the `pipeline`, each batch's post-actions after its commit.

use std::collections::HashMap;
use std::time::Instant;

use chrono::Utc;
use tracing::{debug, info};

use super::{MailboxLoop, WatchError};
use crate::config::{After, MailboxConfig};
use crate::core::ack::AckState;
use crate::daemon::memory;
use crate::daemon::pipeline::{Committing, Downloaded};
use crate::desk::ingest::{self, Outcome, Source};
use crate::imap::{self, Capabilities, ImapError, Session};
use crate::store::{self, StoreError};

/// The bytes of whole messages one batch may hold (besides its count limit), so that a
/// batch in memory stays far below any memory limit.
const BATCH_BYTES: u64 = 64 << 20;
/// A drain of this many messages or more was a backlog: what it took is given back.
const BACKLOG: usize = 100;
/// What a message over the size limit costs in a batch: only its header is fetched.
const HEADER_ONLY_BYTES: u64 = 64 << 10;

impl MailboxLoop {
    /// Ingests everything waiting in the folder, until it stays empty.
    pub(super) async fn drain(
        &mut self,
        session: &mut Session,
        uidvalidity: u32,
        caps: Capabilities,
    ) -> Result<(), WatchError> {
        let m = self.mailbox.clone();
        let mut ingested = 0;
        loop {
            let uids = imap::waiting(session, m.after == After::Seen).await?;
            let (done, todo) = self.split_processed(uids, uidvalidity).await?;
            self.finish_interrupted(session, caps, &done).await?;
            self.ingest_all(session, uidvalidity, caps, &todo).await?;
            ingested += todo.len();
            if self.stop.is_cancelled() {
                return Ok(());
            }
            let (name, now) = (m.name.clone(), Utc::now());
            self.shared.store.write(move |tx| store::record_poll(tx, &name, now)).await?;
            self.backoff.progressed();
            self.shared.metrics.mailbox(&m.name, |h| h.last_poll = Some(now.timestamp()));
            if todo.is_empty() {
                if ingested >= BACKLOG {
                    memory::give_back(&self.shared.store).await;
                }
                return Ok(());
            }
        }
    }

    /// Ingests `uids` batch by batch, each batch's post-actions after its commit; stops
    /// early (between batches) when told to.
    async fn ingest_all(
        &mut self,
        session: &mut Session,
        uidvalidity: u32,
        caps: Capabilities,
        uids: &[u32],
    ) -> Result<(), WatchError> {
        if uids.is_empty() {
            return Ok(());
        }
        let _writing = self.shared.drains.begin();
        let m = self.mailbox.clone();
        let sizes = imap::sizes(session, uids).await?;
        let limit = self.config.policy.max_message_bytes;
        let mut committing: Option<Committing> = None;
        for chunk in batches(uids, &sizes, self.config.batch_size, BATCH_BYTES, limit) {
            if self.stop.is_cancelled() {
                break;
            }
            let started = Instant::now();
            let fetched = self.fetch(session, uidvalidity, &chunk, &sizes).await;
            // This batch is parsed while the previous one commits, and commits while the
            // previous one's post-actions run.
            let next =
                fetched.map(|f| Committing::start(&self.shared.store, &self.config, f, started, committing.as_mut()));
            if let Some(batch) = committing.take() {
                let (ok, failed) = self.committed(batch).await?;
                post_actions(session, &m, caps, &ok, &failed).await?;
            }
            committing = Some(next?);
        }
        if let Some(last) = committing {
            let (ok, failed) = self.committed(last).await?;
            post_actions(session, &m, caps, &ok, &failed).await?;
        }
        Ok(())
    }

    /// Splits the UIDs in the folder into those already processed (only their
    /// post-action is due) and those still to ingest.
    async fn split_processed(&self, uids: Vec<u32>, uidvalidity: u32) -> Result<(Vec<u32>, Vec<u32>), StoreError> {
        let sources: Vec<(u32, Source)> =
            uids.into_iter().map(|u| (u, Source::imap(&self.mailbox, uidvalidity, u))).collect();
        self.shared
            .store
            .read(move |tx| {
                let mut split = (Vec::new(), Vec::new());
                for (uid, source) in sources {
                    let part = if store::is_processed(tx, &source.identity)? { &mut split.0 } else { &mut split.1 };
                    part.push(uid);
                }
                Ok(split)
            })
            .await
    }

    /// Applies the post-action of messages committed earlier whose post-action did not
    /// complete (a restart, a lost connection). A MOVE we gave up on may still have
    /// completed on the server, so only what is still in the folder gets it again.
    async fn finish_interrupted(
        &self,
        session: &mut Session,
        caps: Capabilities,
        done: &[u32],
    ) -> Result<(), ImapError> {
        let m = &self.mailbox;
        let left = imap::still_waiting(session, done, m.after == After::Seen).await?;
        if left.is_empty() {
            return Ok(());
        }
        info!(mailbox = %m.name, "{}: {} message(s) committed earlier are still in {} (their post-action did not complete); applying it now", m.name, left.len(), m.folder);
        post_actions(session, m, caps, &left, &[]).await
    }

    /// Downloads one batch: whole messages, or only the header of one over the size limit.
    async fn fetch(
        &self,
        session: &mut Session,
        uidvalidity: u32,
        uids: &[u32],
        sizes: &HashMap<u32, u32>,
    ) -> Result<Vec<Downloaded>, WatchError> {
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
                fetched.push(Downloaded { uid, raw, source, too_large: None });
            } else if let Some(raw) = headers.remove(&uid) {
                let kept = format!("its header is kept here, the message in folder {}", m.failed_folder);
                let too_large = Some(ingest::oversized(u64::from(sizes[&uid]), limit, &kept));
                fetched.push(Downloaded { uid, raw, source, too_large });
            }
        }
        Ok(fetched)
    }

    /// Waits for a batch's commit and reports it; the UIDs for the configured post-action
    /// and for the failed folder.
    async fn committed(&mut self, batch: Committing) -> Result<(Vec<u32>, Vec<u32>), StoreError> {
        let started = batch.started;
        let outcomes = batch.outcomes().await?;
        Ok(self.report(&outcomes, started))
    }

    /// After a batch's commit: logs, metrics, the outbox nudge, and a clean run of work
    /// for the backoff. The UIDs for the configured post-action and for the failed folder.
    fn report(&mut self, outcomes: &[(u32, Outcome)], started: Instant) -> (Vec<u32>, Vec<u32>) {
        let m = &self.mailbox;
        self.backoff.progressed();
        if outcomes.iter().any(|(_, o)| matches!(o, Outcome::Created { ack: AckState::Queued, .. })) {
            self.shared.nudge.notify_one();
        }
        let seconds = started.elapsed().as_secs_f64();
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        for (uid, outcome) in outcomes {
            self.shared.metrics.record(outcome, seconds);
            info!(mailbox = %m.name, uid, "{} UID {uid}: {outcome}", m.name);
            let part = if matches!(outcome, Outcome::Failed { .. }) { &mut failed } else { &mut ok };
            part.push(*uid);
        }
        debug!(mailbox = %m.name, "{}: committed a batch of {} message(s), {} failed", m.name, outcomes.len(), failed.len());
        (ok, failed)
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
}
