//! The one integration-test binary: golden tests over `fixtures/mail/` and CLI tests
//! that run the real `postdesk` binary against temporary databases, and tests against a
//! private Dovecot IMAP server (`dovecot.rs`) and a private SMTP server (`smtp.rs`).
//! Tests of what is kept run on SQLite and on a private PostgreSQL (`postgres.rs`).

/// Test functions that take a `Backend`, each run as a test on SQLite
/// (`sqlite::NAME`) and on a private PostgreSQL (`postgres::NAME`).
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name($crate::harness::Backend::Sqlite)
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name($crate::harness::Backend::Postgres)
            })*
        }
    };
}

/// `on_both!` for async tests (`#[tokio::test]`).
macro_rules! on_both_async {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name($crate::harness::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name($crate::harness::Backend::Postgres).await
            })*
        }
    };
}

mod acks;
mod agents;
mod browser;
mod cli;
mod command_line;
mod concurrency;
mod customers;
mod daemon;
mod database;
mod dovecot;
mod dovecot_smoke;
mod golden;
mod harness;
mod migrate;
mod oauth;
mod oauth_server;
mod portal;
mod postfix;
mod postgres;
mod servers;
mod service;
mod smtp;
mod smtp_smoke;
mod trust;
mod web;
