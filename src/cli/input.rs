//! What the user typed, checked before the database is opened: addresses, domains,
//! months, states, names. Every failure is a usage error, one line naming the problem;
//! the names are resolved to records by `desk`, inside the command's transaction.

use chrono::{DateTime, NaiveDate, Utc};

use super::usage;
use crate::core::route::State;
use crate::core::{address, ticket_number};
use crate::store::customers::Month;

/// A normalised address.
pub fn address(text: &str) -> anyhow::Result<String> {
    match address::normalise(text) {
        Some(a) => Ok(a),
        None => usage!("{text:?} is not an email address"),
    }
}

pub fn addresses(texts: &[String]) -> anyhow::Result<Vec<String>> {
    texts.iter().map(|t| address(t)).collect()
}

/// A normalised domain name.
pub fn domain(text: &str) -> anyhow::Result<String> {
    match address::normalise_domain(text) {
        Some(d) => Ok(d),
        None => usage!("{text:?} is not a domain name"),
    }
}

pub fn domains(texts: &[String]) -> anyhow::Result<Vec<String>> {
    texts.iter().map(|t| domain(t)).collect()
}

pub fn month(text: &str) -> anyhow::Result<Month> {
    match Month::parse(text.trim()) {
        Some(m) => Ok(m),
        None => usage!("{text:?} is not a month: expected YYYY-MM, e.g. 2026-11"),
    }
}

pub fn state(text: &str) -> anyhow::Result<State> {
    match State::parse(&text.trim().to_lowercase()) {
        Some(s) => Ok(s),
        None => usage!("{text:?} is not a ticket state: expected new, open, pending or closed"),
    }
}

/// A ticket number whose check digit is right: a mistyped digit is caught here, before
/// it can look like a ticket that does not exist.
pub fn ticket_number(text: &str) -> anyhow::Result<String> {
    let number = text.trim();
    if !ticket_number::is_valid(number) {
        usage!(
            "{text:?} is not a valid ticket number: 16 digits (the date, a daily sequence and a check digit); \
             a digit is mistyped, swapped or missing"
        );
    }
    Ok(number.to_owned())
}

/// A day (`YYYY-MM-DD`, from its midnight UTC) or an RFC 3339 time.
pub fn since(text: &str) -> anyhow::Result<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    match DateTime::parse_from_rfc3339(text) {
        Ok(t) => Ok(t.with_timezone(&Utc)),
        Err(_) => usage!("{text:?} is not a date: expected YYYY-MM-DD or e.g. 2026-11-23T09:00:00Z"),
    }
}

/// An organisation name as stored: trimmed, not empty.
pub fn org_name(text: &str) -> anyhow::Result<String> {
    let name = text.trim();
    if name.is_empty() {
        usage!("an organisation name cannot be empty");
    }
    Ok(name.to_owned())
}
