//! The acknowledgement outbox as an admin sees it: every row, and queueing failed or
//! waiting ones for delivery again.

use chrono::{DateTime, Utc};

use super::error::{DeskError, Missing};
use crate::store::outbox::{self as store, OutboxRow};
use crate::store::Tx;

/// Every acknowledgement and reply, oldest first; or (`limit`) the newest, newest first.
pub fn list(tx: &Tx, limit: Option<u32>) -> Result<Vec<OutboxRow>, DeskError> {
    Ok(store::list(tx, limit)?)
}

/// What the outbox holds for one ticket, oldest first.
pub fn of_ticket(tx: &Tx, number: &str) -> Result<Vec<OutboxRow>, DeskError> {
    Ok(store::of_ticket(tx, number)?)
}

/// Queues row `id` for an attempt at `now`, or (`None`) every unsent row that did not
/// bounce: a bounced one is retried only by its id, after the address was checked. How
/// many rows were queued; a row named that is sent or not there is refused.
pub fn retry(tx: &Tx, id: Option<i64>, now: DateTime<Utc>) -> Result<usize, DeskError> {
    match (store::retry(tx, id, now)?, id) {
        (0, Some(id)) => Err(Missing::UnsentAck(id).into()),
        (n, _) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desk::testing::{now, store, ticket};

    #[test]
    fn retrying_a_row_that_is_not_waiting_is_refused() {
        let mut store = store();
        ticket(&mut store, "ann@acme.example", "printer");
        let rows = store.read(|tx| list(tx, None)).unwrap();
        assert_eq!(rows.len(), 1, "one acknowledgement queued");
        assert_eq!(store.write(|tx| retry(tx, None, now())).unwrap(), 1);
        assert_eq!(store.write(|tx| retry(tx, Some(rows[0].id), now())).unwrap(), 1);
        let err = store.write(|tx| retry(tx, Some(rows[0].id + 1), now())).unwrap_err();
        assert!(matches!(err, DeskError::NotFound(Missing::UnsentAck(_))), "{err:?}");
    }
}
