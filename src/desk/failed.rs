//! Failed messages, kept with their bytes: listing, reading one, and running them
//! through the pipeline again (say, after an upgrade that fixed the parser).

use chrono::{DateTime, Utc};

use super::error::{DeskError, Missing};
use super::ingest::{self, Message, Outcome, Source};
use crate::config::Config;
use crate::store::tickets::{self as store, FailedMessage};
use crate::store::{Store, Tx};

/// A failed message and the bytes it arrived with.
#[derive(Debug)]
pub struct Kept {
    pub failed: FailedMessage,
    pub raw: Vec<u8>,
}

/// What retrying one failed message did.
#[derive(Debug)]
pub struct Retried {
    pub failed: FailedMessage,
    pub result: Retry,
}

#[derive(Debug)]
pub enum Retry {
    /// Not run again: it is over the size limit, and what is kept of it would make a
    /// ticket of a part of a message.
    Oversized,
    Ingested(Outcome),
}

/// Every failed message, oldest first.
pub fn list(tx: &Tx) -> Result<Vec<FailedMessage>, DeskError> {
    Ok(store::failed(tx)?)
}

pub fn show(tx: &Tx, id: i64) -> Result<Kept, DeskError> {
    match store::failed_one(tx, id)? {
        Some((failed, raw)) => Ok(Kept { failed, raw }),
        None => Err(Missing::FailedMessage(id).into()),
    }
}

/// Runs failed message `id` (`None`: every one) through the pipeline again, in one
/// batch: the oversized ones first (not retried), then the others in order. Nothing is
/// retried when one of them does not exist.
pub fn retry(
    store: &mut Store,
    config: &Config,
    id: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Vec<Retried>, DeskError> {
    let found = store.read(|tx| {
        let ids = match id {
            Some(id) => vec![id],
            None => store::failed_ids(tx)?,
        };
        ids.into_iter().map(|id| show(tx, id)).collect::<Result<Vec<_>, _>>()
    })?;
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let (skipped, retried): (Vec<Kept>, Vec<Kept>) =
        found.into_iter().partition(|kept| ingest::was_oversized(&kept.failed.reason));
    let messages: Vec<Message> = retried.iter().map(|kept| message(kept, config)).collect();
    let reports = ingest::ingest_batch(store, config, &messages, now)?;
    let oversized = skipped.into_iter().map(|kept| Retried { failed: kept.failed, result: Retry::Oversized });
    let ingested = retried
        .into_iter()
        .zip(reports)
        .map(|(kept, report)| Retried { failed: kept.failed, result: Retry::Ingested(report.outcome) });
    Ok(oversized.chain(ingested).collect())
}

/// A failed message as it came in the first time: from the same source, so that the
/// ledger knows it.
fn message(kept: &Kept, config: &Config) -> Message {
    Message {
        prepared: ingest::prepare(&kept.raw, &config.policy),
        raw: kept.raw.clone(),
        source: Source {
            identity: kept.failed.source.clone(),
            label: kept.failed.origin.clone(),
            mailbox_address: None,
            authserv_id: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desk::testing::{config, now, store};

    /// A message over the size limit is kept as failed, and a retry leaves it so.
    #[test]
    fn an_oversized_message_is_not_retried() {
        let mut store = store();
        let config = config();
        let raw = vec![b'x'; config.policy.max_message_bytes + 1];
        let source = Source::file("big.eml", &raw);
        ingest::ingest_one(&mut store, &config, &raw, &source, now()).unwrap();
        let failed = store.read(list).unwrap();
        assert_eq!(failed.len(), 1);
        let retried = retry(&mut store, &config, None, now()).unwrap();
        assert!(matches!(retried[..], [Retried { result: Retry::Oversized, .. }]), "{retried:?}");
        assert_eq!(store.read(|tx| show(tx, failed[0].id)).unwrap().raw, raw);
        let err = retry(&mut store, &config, Some(failed[0].id + 1), now()).unwrap_err();
        assert!(matches!(err, DeskError::NotFound(Missing::FailedMessage(_))), "{err:?}");
    }

    #[test]
    fn a_retry_runs_the_message_again() {
        let mut store = store();
        let config = config();
        let raw = b"From: ann@acme.example\r\nSubject: s\r\n\r\nbody\r\n";
        store.write(|tx| crate::store::record_failure(tx, "file:x", "x.eml", raw, "unparseable: test", now())).unwrap();
        let retried = retry(&mut store, &config, None, now()).unwrap();
        assert!(
            matches!(retried[..], [Retried { result: Retry::Ingested(Outcome::Created { .. }), .. }]),
            "{retried:?}"
        );
    }
}
