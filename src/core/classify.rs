//! Classify: what kind of mail an inbound message is (auto-reply, bulk, bounce, loop,
//! our own, spam). Pure. A classification only ever withholds an acknowledgement; it
//! never drops a message.

use serde::Serialize;

use super::address;
use super::parse::Inbound;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// RFC 3834 `Auto-Submitted`, `X-Autoreply`, `X-Autorespond`, `Precedence: auto_reply`.
    AutoReply,
    /// `X-Auto-Response-Suppress`: the sender asked not to be answered automatically.
    AutoResponseSuppressed,
    /// `Precedence: bulk|junk|list`, `List-Id`, `List-Unsubscribe`.
    Bulk,
    /// `multipart/report`, a null envelope sender, MAILER-DAEMON or postmaster.
    Bounce,
    /// Carries our own loop header: it already went through a postdesk.
    Loop,
    /// Sent from one of our own helpdesk addresses.
    OwnAddress,
    /// `X-Spam-Flag: YES`.
    Spam,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AutoReply => "auto-reply",
            Kind::AutoResponseSuppressed => "auto-response-suppressed",
            Kind::Bulk => "bulk",
            Kind::Bounce => "bounce",
            Kind::Loop => "loop",
            Kind::OwnAddress => "own-address",
            Kind::Spam => "spam",
        }
    }
}

/// Every kind that applies, in a fixed order; empty for a message written by a person.
pub fn classify(inbound: &Inbound, own_addresses: &[String]) -> Vec<Kind> {
    let s = &inbound.signals;
    let from = inbound.from.as_ref().map(|m| m.address.as_str()).unwrap_or("");
    let from_normalised = address::normalise(from);
    let auto_submitted = s.auto_submitted.as_deref().is_some_and(|v| !v.starts_with("no"));
    let precedence = s.precedence.as_deref().unwrap_or("");
    let checks = [
        (Kind::AutoReply, auto_submitted || s.x_autoreply || s.x_autorespond || precedence == "auto_reply"),
        (Kind::AutoResponseSuppressed, s.x_auto_response_suppress.as_deref().is_some_and(|v| !v.is_empty())),
        (Kind::Bulk, matches!(precedence, "bulk" | "junk" | "list") || s.list_id || s.list_unsubscribe),
        (Kind::Bounce, s.report || s.report_in_body || s.null_return_path || is_daemon_sender(from)),
        (Kind::Loop, !s.loop_header.is_empty()),
        (Kind::OwnAddress, from_normalised.is_some_and(|f| own_addresses.contains(&f))),
        (Kind::Spam, s.spam_flag),
    ];
    checks.into_iter().filter(|(_, applies)| *applies).map(|(kind, _)| kind).collect()
}

/// MAILER-DAEMON and postmaster send bounces, with or without a domain.
fn is_daemon_sender(from: &str) -> bool {
    let local = from.split('@').next().unwrap_or("").trim().to_ascii_lowercase();
    matches!(local.as_str(), "mailer-daemon" | "postmaster" | "mail-daemon")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::parse::parse;

    fn kinds(headers: &str) -> Vec<Kind> {
        let raw = if headers.contains("\r\n\r\n") {
            headers.to_owned()
        } else {
            format!("{headers}\r\nSubject: s\r\n\r\nbody\r\n")
        };
        let inbound = parse(raw.as_bytes(), "X-Postdesk-Loop").expect("parses");
        classify(&inbound, &["support@helpdesk.example".to_owned()])
    }

    #[test]
    fn table() {
        use Kind::*;
        let cases: &[(&str, &[Kind])] = &[
            ("From: a@acme.example", &[]),
            ("From: a@acme.example\r\nAuto-Submitted: no", &[]),
            ("From: a@acme.example\r\nAuto-Submitted: auto-replied", &[AutoReply]),
            ("From: a@acme.example\r\nAuto-Submitted: auto-generated", &[AutoReply]),
            ("From: a@acme.example\r\nX-Autoreply: yes", &[AutoReply]),
            ("From: a@acme.example\r\nX-Autorespond: yes", &[AutoReply]),
            ("From: a@acme.example\r\nPrecedence: auto_reply", &[AutoReply]),
            ("From: a@acme.example\r\nX-Auto-Response-Suppress: All", &[AutoResponseSuppressed]),
            ("From: a@acme.example\r\nPrecedence: bulk", &[Bulk]),
            ("From: a@acme.example\r\nPrecedence: junk", &[Bulk]),
            ("From: a@acme.example\r\nPrecedence: list", &[Bulk]),
            ("From: a@acme.example\r\nList-Id: <x.acme.example>", &[Bulk]),
            ("From: a@acme.example\r\nList-Unsubscribe: <mailto:u@acme.example>", &[Bulk]),
            ("From: MAILER-DAEMON@mx.acme.example", &[Bounce]),
            ("From: Mail Delivery Subsystem <mailer-daemon>", &[Bounce]),
            ("From: postmaster@acme.example", &[Bounce]),
            ("From: a@acme.example\r\nReturn-Path: <>", &[Bounce]),
            ("From: a@acme.example\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b", &[Bounce]),
            (
                "From: a@acme.example\r\nSubject: Fwd: Returned mail\r\n\r\n> Final-Recipient: rfc822; b@x.example\r\n> Status: 5.1.1",
                &[Bounce],
            ),
            ("From: a@acme.example\r\nX-Postdesk-Loop: support@helpdesk.example", &[Loop]),
            ("From: Support <SUPPORT@helpdesk.example>", &[OwnAddress]),
            ("From: a@acme.example\r\nX-Spam-Flag: YES", &[Spam]),
            ("From: a@acme.example\r\nX-Spam-Flag: NO", &[]),
            ("From: a@acme.example\r\nSubject: Out of office", &[]),
            ("From: MAILER-DAEMON@x.example\r\nAuto-Submitted: auto-replied\r\nReturn-Path: <>", &[AutoReply, Bounce]),
        ];
        for (headers, want) in cases {
            assert_eq!(kinds(headers), *want, "headers: {headers:?}");
        }
    }
}
