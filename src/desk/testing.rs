//! What the tests of the service layer share: an in-memory store, a fixed time, the
//! default configuration, and mail ingested the way it arrives.

use chrono::{DateTime, TimeZone, Utc};

use super::ingest::{self, Outcome, Source};
use crate::config::{self, Config};
use crate::store::Store;

pub fn store() -> Store {
    Store::open_in_memory().expect("an in-memory store")
}

pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap()
}

/// The built-in defaults (an empty file, so that no ./postdesk.toml is read).
pub fn config() -> Config {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("postdesk.toml");
    std::fs::write(&file, "").unwrap();
    config::load(Some(&file), None).expect("the default configuration")
}

/// Ingests a plain message from `from` and returns the number of the ticket it made.
pub fn ticket(store: &mut Store, from: &str, subject: &str) -> String {
    let raw = format!(
        "From: {from}\r\nTo: support@helpdesk.example\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}.{}@test.example>\r\n\r\nPlease help.\r\n",
        from.replace(['@', ' ', '<', '>'], ".")
    );
    let source = Source::file(subject, raw.as_bytes());
    let report = ingest::ingest_one(store, &config(), raw.as_bytes(), &source, now()).expect("ingest");
    match report.outcome {
        Outcome::Created { ticket, .. } => ticket,
        other => panic!("not a new ticket: {other}"),
    }
}
