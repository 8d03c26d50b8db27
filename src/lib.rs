//! postdesk turns a helpdesk mailbox into tickets. See ARCHITECTURE.md for the map.

pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod desk;
pub mod imap;
pub mod oauth;
pub mod secret;
pub mod smtp;
pub mod store;
pub mod tls;
pub mod web;
