//! When to try again. After an acknowledgement's delivery attempt, the row is sent,
//! retried later (transient failure, jittered exponential backoff), or failed for good
//! (permanent failure, or retried for longer than allowed). After a connection or
//! storage failure, a loop waits `backoff` before its next try. Pure.

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Accepted,
    /// Connection refused, timeout, 4xx: may succeed later.
    Transient(String),
    /// 5xx: the server will not take this message.
    Permanent(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Sent,
    RetryAt(DateTime<Utc>),
    Failed(String),
}

/// The longest wait between two tries of a failing connection or database.
pub const BACKOFF_CAP: std::time::Duration = std::time::Duration::from_secs(300);

/// The wait after `failures` failures in a row (0 for the first), doubling from one second
/// (or from a minute with `slow`, e.g. after a refused login, so as not to lock the
/// account) up to `BACKOFF_CAP`; `jitter` in [0, 1) picks a point in its upper half.
pub fn backoff(failures: u32, slow: bool, jitter: f64) -> std::time::Duration {
    let base = if slow { 60.0 } else { 1.0 };
    let full = (base * 2f64.powi(failures.min(16) as i32)).min(BACKOFF_CAP.as_secs_f64());
    std::time::Duration::from_secs_f64(full * (0.5 + jitter / 2.0))
}

const FIRST_DELAY_SECS: f64 = 30.0;
const MAX_DELAY_SECS: f64 = 3600.0;

/// `attempts` counts this one; `jitter` in [0, 1) spreads retries over the upper half of
/// the delay so that a backlog does not hit a recovering server all at once.
pub fn after_attempt(
    attempt: &Attempt,
    attempts: u32,
    queued_at: DateTime<Utc>,
    now: DateTime<Utc>,
    give_up_after: Duration,
    jitter: f64,
) -> Next {
    match attempt {
        Attempt::Accepted => Next::Sent,
        Attempt::Permanent(reply) => Next::Failed(reply.clone()),
        Attempt::Transient(error) => {
            let exponent = attempts.saturating_sub(1).min(20) as i32;
            let full = (FIRST_DELAY_SECS * 2f64.powi(exponent)).min(MAX_DELAY_SECS);
            let at = now + Duration::milliseconds((full * (0.5 + jitter / 2.0) * 1000.0).round() as i64);
            if at > queued_at + give_up_after {
                Next::Failed(format!("gave up after {} hours: {error}", give_up_after.num_hours()))
            } else {
                Next::RetryAt(at)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let secs = |f, slow| backoff(f, slow, 0.999_999).as_secs();
        assert_eq!([secs(0, false), secs(1, false), secs(5, false), secs(30, false)], [0, 1, 31, 299]);
        assert_eq!(secs(0, true), 59);
        assert_eq!(backoff(3, false, 0.0), std::time::Duration::from_secs(4));
    }
    use chrono::TimeZone;

    #[test]
    fn table() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
        let two_days = Duration::hours(48);
        let transient = Attempt::Transient("451 try later".to_owned());
        let cases = [
            (Attempt::Accepted, 1, t0, Next::Sent),
            (Attempt::Permanent("550 no such user".to_owned()), 1, t0, Next::Failed("550 no such user".to_owned())),
            (transient.clone(), 1, t0, Next::RetryAt(t0 + Duration::seconds(30))),
            (transient.clone(), 3, t0, Next::RetryAt(t0 + Duration::seconds(120))),
            (transient.clone(), 30, t0, Next::RetryAt(t0 + Duration::seconds(3600))),
            (
                transient.clone(),
                30,
                t0 + Duration::hours(47) + Duration::minutes(30),
                Next::Failed("gave up after 48 hours: 451 try later".to_owned()),
            ),
        ];
        for (attempt, attempts, now, want) in cases {
            assert_eq!(
                after_attempt(&attempt, attempts, t0, now, two_days, 0.999_999_999),
                want,
                "{attempt:?} #{attempts}"
            );
        }
        assert_eq!(after_attempt(&transient, 1, t0, t0, two_days, 0.0), Next::RetryAt(t0 + Duration::seconds(15)));
    }
}
