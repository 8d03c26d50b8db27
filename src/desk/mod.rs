//! The service layer: every operation a user can do (ingest a message, manage customers
//! and organisations, work tickets, the outbox and failed messages), each a function of a
//! store transaction, the command and the time, returning a typed result or error. The
//! CLI, the daemon and the web console call these and nothing beneath them decides.

pub mod agents;
pub mod customers;
pub mod error;
pub mod failed;
pub mod ingest;
pub mod oauth;
pub mod orgs;
pub mod outbox;
pub mod portal;
#[cfg(test)]
mod testing;
pub mod tickets;
mod token;

/// FROM is merged into INTO (what moves, and how each is named, is the merging module's).
#[derive(Debug)]
pub struct Merge {
    pub from: String,
    pub into: String,
}
