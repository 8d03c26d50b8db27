//! postdesk turns a helpdesk mailbox into tickets. See ARCHITECTURE.md for the map.

pub mod cli;
pub mod config;
pub mod core;
pub mod ingest;
pub mod store;
