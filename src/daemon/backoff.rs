//! How a loop that keeps failing (a mailbox's connection, the acknowledgement sender)
//! waits and says so: one log line when a kind of failure begins, the same failure again
//! only at debug level, and a wait that doubles (`core::retry::backoff`) until real work
//! gets done. A login that works while the database does not is no progress, so only
//! the caller says when the count starts again.

use std::fmt::Display;
use std::time::Duration;

use tracing::{debug, error, warn};

use crate::core::retry;

pub struct Backoff {
    /// Who fails, first in every line: "support", "the acknowledgement sender".
    who: String,
    failures: u32,
    /// The kind of the failure under way, so that each change is logged once.
    down: Option<&'static str>,
}

/// How soon a failure may pass (see `imap::Retry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    Soon,
    /// Only an operator can fix it: retried from a minute on, and logged as an error.
    Slowly,
}

impl Backoff {
    pub fn new(who: impl Into<String>) -> Backoff {
        Backoff { who: who.into(), failures: 0, down: None }
    }

    /// Logs a failure of a new `kind` once; the wait before the next try.
    pub fn failed(&mut self, kind: &'static str, pace: Pace, error: &dyn Display) -> Duration {
        let delay = retry::backoff(self.failures, pace == Pace::Slowly, fastrand::f64());
        let (who, secs) = (&self.who, delay.as_secs());
        match (self.down == Some(kind), pace) {
            (true, _) => debug!("{who}: still failing: {error}; next attempt in {secs}s"),
            (false, Pace::Soon) => warn!("{who}: {error}; retrying with backoff (next in {secs}s)"),
            (false, Pace::Slowly) => error!(
                "{who}: {error}; this will not pass by itself: fix it (no restart needed), \
                 until then retrying every few minutes (next in {secs}s)"
            ),
        }
        self.down = Some(kind);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// The failure under way ended (a connection is up again): whether there was one.
    /// The wait keeps growing until `progressed`.
    pub fn recovered(&mut self) -> bool {
        self.down.take().is_some()
    }

    /// Work was done (a batch committed, an acknowledgement recorded): the next failure
    /// waits from the start again. How many failures there were.
    pub fn progressed(&mut self) -> u32 {
        self.down = None;
        std::mem::take(&mut self.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_grows_until_progress_not_until_a_reconnect() {
        let mut b = Backoff::new("test");
        let waits: Vec<u64> = (0..4).map(|_| b.failed("connect", Pace::Soon, &"refused").as_millis() as u64).collect();
        assert!(waits.windows(2).all(|w| w[1] >= w[0]) && waits[3] >= 4_000, "{waits:?}");
        assert!(b.recovered());
        assert!(!b.recovered(), "said once");
        assert!(b.failed("connect", Pace::Soon, &"refused") >= Duration::from_secs(8), "a reconnect is no progress");
        assert_eq!(b.progressed(), 5);
        assert!(b.failed("store", Pace::Soon, &"locked") <= Duration::from_secs(1));
        assert!(b.failed("auth", Pace::Slowly, &"refused") >= Duration::from_secs(30));
    }
}
