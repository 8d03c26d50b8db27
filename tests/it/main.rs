//! The one integration-test binary: golden tests over `fixtures/mail/` and CLI tests
//! that run the real `postdesk` binary against temporary databases.

mod cli;
mod customers;
mod golden;
mod harness;
