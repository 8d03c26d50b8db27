//! An agent's reply to the customer, as the mail that goes out: to the ticket's customer
//! address, from the helpdesk address the ticket came in on, the ticket tag in the
//! subject and the ticket's Message-IDs in In-Reply-To/References, so that the
//! customer's answer lands back on the ticket by either. Pure: the caller gathers the
//! ticket's facts and brings the randomness for our Message-ID.

use super::ack::{header_safe, header_safe_id, Acknowledgement, MailKind};
use super::{address, ticket_number, trust};

/// What a reply is built from.
pub struct ReplyInput<'a> {
    pub ticket_number: &'a str,
    pub ticket_subject: &'a str,
    /// The customer address of the ticket; without one there is nobody to answer.
    pub to: Option<&'a str>,
    pub to_name: Option<&'a str>,
    /// The helpdesk address the ticket's acknowledgement came from, else our main one.
    pub from: &'a str,
    pub from_name: &'a str,
    /// The Message-IDs of the ticket's mail (the customer's and ours), oldest first.
    pub thread: &'a [String],
    /// The customer's latest message, which the reply answers.
    pub answering: Option<&'a str>,
    pub tag_prefix: &'a str,
    pub body: &'a str,
    pub random: [u8; 16],
}

/// Why a reply cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("the reply is empty")]
    Empty,
    #[error("ticket {0} has no customer address to answer")]
    NoRecipient(String),
}

/// The most References a reply carries: the first message and the latest ones.
const MAX_REFERENCES: usize = 10;

pub fn build(input: &ReplyInput) -> Result<Acknowledgement, ReplyError> {
    if input.body.trim().is_empty() {
        return Err(ReplyError::Empty);
    }
    let to = input.to.ok_or_else(|| ReplyError::NoRecipient(input.ticket_number.to_owned()))?;
    let subject = tagged_subject(input.tag_prefix, input.ticket_number, input.ticket_subject);
    let references = references(input.thread);
    Ok(Acknowledgement {
        kind: MailKind::Reply,
        to: to.to_owned(),
        to_name: input.to_name.map(|n| header_safe(n, 100)).filter(|n| !n.is_empty()),
        from: input.from.to_owned(),
        from_name: header_safe(input.from_name, 100),
        subject,
        body: input.body.replace("\r\n", "\n"),
        message_id: trust::our_message_id(input.ticket_number, input.random, address::domain_of(input.from)),
        in_reply_to: input.answering.filter(|id| header_safe_id(id)).map(str::to_owned),
        references,
    })
}

/// The subject of a mail into ticket `number`: its tag first, where the pipeline looks
/// first (a tag of another ticket that the ticket's subject carries comes after it), and
/// the ticket's subject, header-safe and bounded, after it.
pub fn tagged_subject(tag_prefix: &str, number: &str, ticket_subject: &str) -> String {
    let tag = ticket_number::tag(tag_prefix, number);
    if ticket_subject.trim_start().starts_with(&tag) {
        return header_safe(ticket_subject, 200);
    }
    let rest = header_safe(&ticket_subject.replace(&tag, " "), 200);
    match rest.as_str() {
        "" => tag,
        r if r.get(..3).is_some_and(|re| re.eq_ignore_ascii_case("re:")) => format!("{tag} {rest}"),
        _ => format!("{tag} Re: {rest}"),
    }
}

/// The References of a mail into a thread (its Message-IDs, oldest first): the first and
/// the latest ones, only those safe in a header.
pub fn references(thread: &[String]) -> Vec<String> {
    let thread: Vec<&String> = thread.iter().filter(|id| header_safe_id(id)).collect();
    let mut references: Vec<String> = thread.first().map(|id| id.to_string()).into_iter().collect();
    let latest = thread.len().saturating_sub(MAX_REFERENCES - 1).max(1);
    references.extend(thread.iter().skip(latest).map(|id| id.to_string()));
    references
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(thread: &'a [String], body: &'a str) -> ReplyInput<'a> {
        ReplyInput {
            ticket_number: "2026112310000017",
            ticket_subject: "Printer\r\non fire",
            to: Some("ann@acme.example"),
            to_name: Some("Ann"),
            from: "support@helpdesk.example",
            from_name: "Bob at ACME Support",
            thread,
            answering: thread.last().map(String::as_str),
            tag_prefix: "Ticket#",
            body,
            random: [7; 16],
        }
    }

    #[test]
    fn a_reply_threads_into_the_ticket() {
        let thread: Vec<String> = (1..=12).map(|i| format!("m{i}@acme.example")).collect();
        let mail = build(&input(&thread, "Hello Ann,\r\nfixed.")).unwrap();
        assert_eq!(mail.kind, MailKind::Reply);
        assert_eq!(mail.subject, "[Ticket#2026112310000017] Re: Printer on fire");
        assert_eq!(mail.in_reply_to.as_deref(), Some("m12@acme.example"));
        assert_eq!(mail.references.len(), MAX_REFERENCES);
        assert_eq!((mail.references[0].as_str(), mail.references[9].as_str()), ("m1@acme.example", "m12@acme.example"));
        assert!(mail.message_id.ends_with("@helpdesk.example"), "{}", mail.message_id);
        assert_eq!(mail.body, "Hello Ann,\nfixed.");
    }

    #[test]
    fn a_tagged_subject_is_kept_and_bad_ids_are_left_out() {
        let thread = vec!["no-at-sign".to_owned(), "a@b.example".to_owned()];
        let mut i = input(&thread, "ok");
        i.ticket_subject = "[Ticket#2026112310000017] Printer";
        let mail = build(&i).unwrap();
        assert_eq!(mail.subject, "[Ticket#2026112310000017] Printer");
        assert_eq!(mail.references, vec!["a@b.example".to_owned()]);
    }

    #[test]
    fn nothing_to_say_or_nobody_to_tell_is_refused() {
        assert_eq!(build(&input(&[], " \n ")).unwrap_err(), ReplyError::Empty);
        let mut i = input(&[], "hi");
        i.to = None;
        assert_eq!(build(&i).unwrap_err().to_string(), "ticket 2026112310000017 has no customer address to answer");
    }

    /// The ticket's tag comes first, where the pipeline looks first, even when the
    /// ticket's subject carries another ticket's tag.
    #[test]
    fn the_tag_comes_first() {
        let other = "[Ticket#2026112310000025]";
        for (subject, want) in [
            ("Printer", "[Ticket#2026112310000017] Re: Printer".to_owned()),
            ("Re: Printer", "[Ticket#2026112310000017] Re: Printer".to_owned()),
            (&format!("Re: {other} x [Ticket#2026112310000017]"), format!("[Ticket#2026112310000017] Re: {other} x")),
            ("", "[Ticket#2026112310000017]".to_owned()),
        ] {
            assert_eq!(tagged_subject("Ticket#", "2026112310000017", subject), want, "{subject}");
        }
    }
}
