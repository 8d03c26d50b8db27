//! Attempts limited per account and per client address: after too many in a window
//! (failed agent sign-ins; portal sign-in links and support requests asked for),
//! further attempts are refused until the oldest leaves the window, whatever they
//! carry. Kept in memory: a restart forgets them, which costs an attacker a restart they
//! cannot cause.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Agents' failed sign-ins allowed per account (its e-mail) in `WINDOW`.
const PER_ACCOUNT: usize = 5;
/// Failures allowed per client address in `WINDOW`: more, since an office shares one.
const PER_CLIENT: usize = 20;
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Past this many keys, forgotten ones are swept before another is added.
const SWEEP_AT: usize = 10_000;

pub struct SignInLimits {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
    per_account: usize,
    per_client: usize,
    window: Duration,
}

/// The agents' sign-in limits.
impl Default for SignInLimits {
    fn default() -> Self {
        SignInLimits::new(PER_ACCOUNT, PER_CLIENT, WINDOW)
    }
}

impl SignInLimits {
    pub fn new(per_account: usize, per_client: usize, window: Duration) -> SignInLimits {
        SignInLimits { failures: Mutex::default(), per_account, per_client, window }
    }

    /// How long until `account` from `client` may try again; `None`: now.
    pub fn wait(&self, account: &str, client: &str, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.window;
        [(account_key(account), self.per_account), (client_key(client), self.per_client)]
            .into_iter()
            .filter_map(|(key, allowed)| {
                let times = failures.get(&key)?;
                let recent: Vec<&Instant> = times.iter().filter(|t| now.duration_since(**t) < window).collect();
                (recent.len() >= allowed).then(|| window - now.duration_since(*recent[recent.len() - allowed]))
            })
            .max()
    }

    /// One attempt more: a failed sign-in of an agent, a portal link or request asked for.
    pub fn count(&self, account: &str, client: &str, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= SWEEP_AT {
            failures.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < self.window));
        }
        for key in [account_key(account), client_key(client)] {
            let times = failures.entry(key).or_default();
            while times.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
                times.pop_front();
            }
            times.push_back(now);
        }
    }

    /// A successful sign-in clears the account's failures (not the client's).
    pub fn succeeded(&self, account: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&account_key(account));
    }
}

fn account_key(account: &str) -> String {
    format!("account {}", account.trim().to_lowercase())
}

fn client_key(client: &str) -> String {
    format!("client {client}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_held_after_five_failures_until_the_first_leaves_the_window() {
        let limits = SignInLimits::default();
        let start = Instant::now();
        for i in 0..PER_ACCOUNT as u64 {
            assert_eq!(limits.wait("ann@acme.example", "10.0.0.1", start + Duration::from_secs(i)), None);
            limits.count("Ann@acme.example", "10.0.0.1", start + Duration::from_secs(i));
        }
        let later = start + Duration::from_secs(60);
        assert_eq!(limits.wait("ann@acme.example", "10.0.0.9", later), Some(WINDOW - Duration::from_secs(60)));
        assert_eq!(limits.wait("bob@acme.example", "10.0.0.1", later), None, "another account from there may");
        assert_eq!(limits.wait("ann@acme.example", "10.0.0.1", start + WINDOW), None);
        limits.succeeded("ann@acme.example");
        assert_eq!(limits.wait("ann@acme.example", "10.0.0.1", later), None);
    }

    #[test]
    fn a_client_is_held_after_twenty_failures_across_accounts() {
        let limits = SignInLimits::default();
        let now = Instant::now();
        for i in 0..PER_CLIENT {
            limits.count(&format!("user{i}@acme.example"), "10.0.0.1", now);
        }
        assert!(limits.wait("new@acme.example", "10.0.0.1", now).is_some());
        assert_eq!(limits.wait("new@acme.example", "10.0.0.2", now), None);
    }
}
