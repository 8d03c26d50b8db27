//! Counters the daemon keeps, rendered in the Prometheus text format, and the per-mailbox
//! liveness the watchdog and `STATUS=` read. Updated with atomics; no I/O here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::core::ack::AckState;
use crate::desk::ingest::Outcome;

/// Upper bounds of the ingest latency histogram, in seconds.
const BUCKETS: [f64; 9] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Debug, Default, Clone)]
pub struct MailboxHealth {
    pub connected: bool,
    /// Unix time of the last drain that completed.
    pub last_poll: Option<i64>,
    /// Unix time a step (connect, drain) began, while one is under way.
    pub busy_since: Option<i64>,
    /// The OAuth2 provider whose sign-in was refused, while the mailbox waits for a new one.
    pub needs_sign_in: Option<String>,
}

impl MailboxHealth {
    /// One of `STATES`.
    pub fn state(&self) -> &'static str {
        match (self.connected, &self.needs_sign_in) {
            (true, _) => "connected",
            (false, Some(_)) => "needs_sign_in",
            (false, None) => "disconnected",
        }
    }
}

/// The values of `postdesk_mailbox_state`'s `state` label.
const STATES: [&str; 3] = ["connected", "disconnected", "needs_sign_in"];

#[derive(Debug, Default)]
pub struct Metrics {
    pub fetched: AtomicU64,
    pub created: AtomicU64,
    pub follow_ups: AtomicU64,
    pub duplicates: AtomicU64,
    pub failed: AtomicU64,
    pub acks_queued: AtomicU64,
    pub acks_sent: AtomicU64,
    pub acks_failed: AtomicU64,
    pub reconnects: AtomicU64,
    /// Tasks (mailbox loops, the acknowledgement sender) that ended while the daemon ran.
    pub tasks_stopped: AtomicU64,
    /// IMAP connections found stalled in IDLE (no answer within the bound) and reopened.
    pub imap_stalls: AtomicU64,
    acks_suppressed: Mutex<BTreeMap<String, u64>>,
    /// The OAuth2 provider of `[smtp]`, while the sender waits for its sign-in.
    smtp_needs_sign_in: Mutex<Option<String>>,
    mailboxes: Mutex<BTreeMap<String, MailboxHealth>>,
    latency: Mutex<Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// Counts one ingested message and how long it took from fetch to commit.
    pub fn record(&self, outcome: &Outcome, seconds: f64) {
        self.fetched.fetch_add(1, Relaxed);
        match outcome {
            Outcome::Created { ack: AckState::Queued, .. } => {
                self.created.fetch_add(1, Relaxed);
                self.acks_queued.fetch_add(1, Relaxed);
            }
            Outcome::Created { ack: AckState::Skipped(reason), .. } => {
                self.created.fetch_add(1, Relaxed);
                *lock(&self.acks_suppressed).entry(reason.clone()).or_default() += 1;
            }
            Outcome::FollowUp { .. } => _ = self.follow_ups.fetch_add(1, Relaxed),
            // Attached to the acknowledged ticket; the outbox row says bounced.
            Outcome::AckBounced { .. } => {}
            Outcome::Duplicate { .. } => _ = self.duplicates.fetch_add(1, Relaxed),
            Outcome::Failed { .. } => _ = self.failed.fetch_add(1, Relaxed),
        }
        let mut h = lock(&self.latency);
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    pub fn mailbox(&self, name: &str, update: impl FnOnce(&mut MailboxHealth)) {
        update(lock(&self.mailboxes).entry(name.to_owned()).or_default());
    }

    pub fn mailboxes(&self) -> BTreeMap<String, MailboxHealth> {
        lock(&self.mailboxes).clone()
    }

    /// Sets whether (and for which provider) the sender waits for a sign-in; what it was.
    pub fn smtp_sign_in(&self, provider: Option<String>) -> Option<String> {
        std::mem::replace(&mut *lock(&self.smtp_needs_sign_in), provider)
    }

    pub fn smtp_needs_sign_in(&self) -> Option<String> {
        lock(&self.smtp_needs_sign_in).clone()
    }

    /// The Prometheus text exposition; `outbox_depth`, and each OAuth2 provider's seconds
    /// until its access token expires, are read from the store by the caller.
    pub fn render(&self, outbox_depth: i64, token_expiry: &[(String, i64)]) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ =
                writeln!(out, "# HELP postdesk_{name} {help}\n# TYPE postdesk_{name} counter\npostdesk_{name} {value}");
        };
        counter(
            "messages_fetched_total",
            "Messages fetched from mailboxes and run through the pipeline.",
            self.fetched.load(Relaxed),
        );
        counter("tickets_created_total", "New tickets.", self.created.load(Relaxed));
        counter("follow_ups_total", "Messages appended to existing tickets.", self.follow_ups.load(Relaxed));
        counter("duplicates_total", "Messages recognised as already processed.", self.duplicates.load(Relaxed));
        counter("failed_messages_total", "Messages kept as failed messages.", self.failed.load(Relaxed));
        counter("acknowledgements_queued_total", "Acknowledgements queued.", self.acks_queued.load(Relaxed));
        counter(
            "acknowledgements_sent_total",
            "Acknowledgements accepted by the SMTP server.",
            self.acks_sent.load(Relaxed),
        );
        counter("acknowledgements_failed_total", "Acknowledgements given up on.", self.acks_failed.load(Relaxed));
        counter(
            "imap_reconnects_total",
            "IMAP connections re-established after a failure.",
            self.reconnects.load(Relaxed),
        );
        counter(
            "imap_stalls_total",
            "IMAP connections that stopped answering in IDLE and were reopened.",
            self.imap_stalls.load(Relaxed),
        );
        counter(
            "tasks_stopped_total",
            "Daemon tasks (mailbox loops, the acknowledgement sender) that ended while the daemon ran.",
            self.tasks_stopped.load(Relaxed),
        );
        out.push_str("# HELP postdesk_acknowledgements_suppressed_total New tickets not acknowledged, by reason.\n");
        out.push_str("# TYPE postdesk_acknowledgements_suppressed_total counter\n");
        for (reason, n) in lock(&self.acks_suppressed).iter() {
            let _ = writeln!(out, "postdesk_acknowledgements_suppressed_total{{reason=\"{}\"}} {n}", label(reason));
        }
        out.push_str("# HELP postdesk_mailbox_last_poll_timestamp_seconds When the mailbox was last drained.\n");
        out.push_str("# TYPE postdesk_mailbox_last_poll_timestamp_seconds gauge\n");
        out.push_str("# HELP postdesk_mailbox_connected Whether the mailbox's IMAP connection is up.\n");
        out.push_str("# TYPE postdesk_mailbox_connected gauge\n");
        for (name, m) in lock(&self.mailboxes).iter() {
            let name = label(name);
            if let Some(t) = m.last_poll {
                let _ = writeln!(out, "postdesk_mailbox_last_poll_timestamp_seconds{{mailbox=\"{name}\"}} {t}");
            }
            let _ = writeln!(out, "postdesk_mailbox_connected{{mailbox=\"{name}\"}} {}", u8::from(m.connected));
        }
        out.push_str("# HELP postdesk_mailbox_state The mailbox's state: 1 for the one it is in.\n");
        out.push_str("# TYPE postdesk_mailbox_state gauge\n");
        for (name, m) in lock(&self.mailboxes).iter() {
            let name = label(name);
            for state in STATES {
                let on = u8::from(m.state() == state);
                let _ = writeln!(out, "postdesk_mailbox_state{{mailbox=\"{name}\",state=\"{state}\"}} {on}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP postdesk_outbox_depth Acknowledgements waiting to be sent.\n# TYPE postdesk_outbox_depth gauge\npostdesk_outbox_depth {outbox_depth}"
        );
        let smtp_waits = u8::from(self.smtp_needs_sign_in().is_some());
        let _ = writeln!(
            out,
            "# HELP postdesk_smtp_needs_sign_in Whether the sender waits for an OAuth2 sign-in of [smtp].\n\
             # TYPE postdesk_smtp_needs_sign_in gauge\npostdesk_smtp_needs_sign_in {smtp_waits}"
        );
        out.push_str("# HELP postdesk_oauth_token_expiry_seconds Seconds until the provider's access token expires.\n");
        out.push_str("# TYPE postdesk_oauth_token_expiry_seconds gauge\n");
        for (provider, seconds) in token_expiry {
            let _ = writeln!(out, "postdesk_oauth_token_expiry_seconds{{provider=\"{}\"}} {seconds}", label(provider));
        }
        let h = lock(&self.latency);
        out.push_str("# HELP postdesk_ingest_latency_seconds From fetch to durable commit, per message.\n");
        out.push_str("# TYPE postdesk_ingest_latency_seconds histogram\n");
        for (bound, n) in BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(out, "postdesk_ingest_latency_seconds_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "postdesk_ingest_latency_seconds_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(
            out,
            "postdesk_ingest_latency_seconds_sum {}\npostdesk_ingest_latency_seconds_count {}",
            h.sum, h.count
        );
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_labels_and_the_histogram() {
        let m = Metrics::default();
        m.record(&Outcome::Created { ticket: "1".into(), ack: AckState::Queued, notes: vec![] }, 0.02);
        m.record(&Outcome::Created { ticket: "2".into(), ack: AckState::Skipped("bulk".into()), notes: vec![] }, 0.3);
        m.record(&Outcome::Duplicate { ticket: None, reason: "already processed" }, 0.001);
        m.mailbox("sup\"port", |h| {
            h.connected = true;
            h.last_poll = Some(1_800_000_000);
        });
        m.mailbox("m365", |h| h.needs_sign_in = Some("m365".into()));
        let text = m.render(4, &[("m365".into(), -5)]);
        for line in [
            "postdesk_messages_fetched_total 3",
            "postdesk_tickets_created_total 2",
            "postdesk_duplicates_total 1",
            "postdesk_acknowledgements_suppressed_total{reason=\"bulk\"} 1",
            "postdesk_mailbox_connected{mailbox=\"sup\\\"port\"} 1",
            "postdesk_mailbox_last_poll_timestamp_seconds{mailbox=\"sup\\\"port\"} 1800000000",
            "postdesk_outbox_depth 4",
            "postdesk_mailbox_state{mailbox=\"sup\\\"port\",state=\"connected\"} 1",
            "postdesk_mailbox_state{mailbox=\"m365\",state=\"needs_sign_in\"} 1",
            "postdesk_mailbox_state{mailbox=\"m365\",state=\"connected\"} 0",
            "postdesk_oauth_token_expiry_seconds{provider=\"m365\"} -5",
            "postdesk_ingest_latency_seconds_bucket{le=\"0.025\"} 2",
            "postdesk_ingest_latency_seconds_bucket{le=\"+Inf\"} 3",
            "postdesk_ingest_latency_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
    }
}
