//! The pure core: parse → classify → route → resolve → decide. Nothing in here does
//! I/O, reads the clock or the environment; facts and time come in as arguments.

pub mod ack;
pub mod address;
pub mod admin;
pub mod bounds;
pub mod charset;
pub mod classify;
pub mod decide;
pub mod html;
pub mod identity;
pub mod oauth;
pub mod parse;
pub mod portal;
pub mod reply;
pub mod resolve;
pub mod retry;
pub mod route;
pub mod ticket_number;
pub mod trust;
pub mod uuencode;
