//! The customer portal's mail, as data: the sign-in link and the link that confirms a
//! request of the public support form (both automatic, belonging to no ticket), and a
//! message written in the portal as the raw RFC 5322 bytes the pipeline ingests, so that
//! a form is handled exactly as a mail would be. Pure: the caller brings the time and
//! the randomness; nothing a form's user typed reaches a mail they did not write.

use chrono::{DateTime, Utc};
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::Message;

use super::ack::{header_safe, Acknowledgement, MailKind};
use super::{address, trust};

/// Who the portal's automatic mail comes from.
pub struct Sender<'a> {
    pub helpdesk_name: &'a str,
    pub from: &'a str,
    pub from_name: &'a str,
}

/// The mail with a single-use sign-in link, valid for `minutes`.
pub fn sign_in_mail(sender: &Sender, to: &str, link: &str, minutes: i64, random: [u8; 16]) -> Acknowledgement {
    let helpdesk = header_safe(sender.helpdesk_name, 100);
    let body = format!(
        "Hello,\n\nto sign in to the {helpdesk} portal, open this link within {minutes} minutes:\n\n{link}\n\n\
         The link works once. If you did not ask to sign in, ignore this mail: nobody can sign in without it.\n"
    );
    automatic(sender, MailKind::SignIn, to, format!("Sign in to {helpdesk}"), body, random)
}

/// The mail that asks the sender of a support request to confirm their address.
pub fn confirm_mail(sender: &Sender, to: &str, link: &str, minutes: i64, random: [u8; 16]) -> Acknowledgement {
    let helpdesk = header_safe(sender.helpdesk_name, 100);
    let body = format!(
        "Hello,\n\nsomeone sent a support request to {helpdesk} with this address. To open the ticket, \
         confirm within {minutes} minutes that the address is yours:\n\n{link}\n\n\
         If it was not you, ignore this mail: no ticket is opened.\n"
    );
    automatic(sender, MailKind::Confirm, to, format!("Confirm your request to {helpdesk}"), body, random)
}

fn automatic(
    sender: &Sender,
    kind: MailKind,
    to: &str,
    subject: String,
    body: String,
    random: [u8; 16],
) -> Acknowledgement {
    Acknowledgement {
        kind,
        to: to.to_owned(),
        to_name: None,
        from: sender.from.to_owned(),
        from_name: header_safe(sender.from_name, 100),
        subject,
        body,
        message_id: trust::portal_message_id(kind.as_str(), random, address::domain_of(sender.from)),
        in_reply_to: None,
        references: Vec::new(),
    }
}

/// A file uploaded with a form.
#[derive(Clone)]
pub struct Upload {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// A message written in the portal or the support form.
pub struct Written<'a> {
    pub from: &'a str,
    pub from_name: Option<&'a str>,
    /// The helpdesk address.
    pub to: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
    /// The ticket's messages, when it answers one: its latest, and the thread.
    pub in_reply_to: Option<&'a str>,
    pub references: &'a [String],
    pub uploads: &'a [Upload],
    pub date: DateTime<Utc>,
    pub random: [u8; 16],
}

/// Why a written message cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WrittenError {
    #[error("{0} is not an e-mail address")]
    Address(String),
    #[error("the message is empty")]
    Empty,
    #[error("the subject is empty")]
    NoSubject,
    #[error("the message cannot be made: {0}")]
    Build(String),
}

/// The raw message the pipeline ingests for a form: From the signed-in (or confirmed)
/// address, to the helpdesk, with the text as its plain part and the uploads attached.
pub fn compose(w: &Written) -> Result<Vec<u8>, WrittenError> {
    if w.body.trim().is_empty() {
        return Err(WrittenError::Empty);
    }
    let subject = header_safe(w.subject, 200);
    if subject.is_empty() {
        return Err(WrittenError::NoSubject);
    }
    let name = w.from_name.map(|n| header_safe(n, 100)).filter(|n| !n.is_empty());
    let mailbox = |name: Option<String>, addr: &str| -> Result<Mailbox, WrittenError> {
        let email = addr.parse().map_err(|_| WrittenError::Address(addr.to_owned()))?;
        Ok(Mailbox::new(name, email))
    };
    let id = trust::portal_message_id("portal", w.random, address::domain_of(w.to));
    let mut builder = Message::builder()
        .from(mailbox(name, w.from)?)
        .to(mailbox(None, w.to)?)
        .subject(subject)
        .date(w.date.into())
        .message_id(Some(format!("<{id}>")));
    if let Some(parent) = w.in_reply_to {
        builder = builder.in_reply_to(format!("<{parent}>"));
    }
    if !w.references.is_empty() {
        builder = builder.references(w.references.iter().map(|r| format!("<{r}>")).collect::<Vec<_>>().join(" "));
    }
    let text = SinglePart::plain(w.body.replace("\r\n", "\n"));
    let built = match w.uploads {
        [] => builder.singlepart(text),
        uploads => {
            let mut parts = MultiPart::mixed().singlepart(text);
            for upload in uploads {
                let content_type = upload_type(&upload.content_type);
                parts = parts.singlepart(Attachment::new(upload.name.clone()).body(upload.bytes.clone(), content_type));
            }
            builder.multipart(parts)
        }
    };
    Ok(built.map_err(|e| WrittenError::Build(e.to_string()))?.formatted())
}

/// The type a browser gave an upload, except the types that would make the message a
/// report or a container (`message/*`, `multipart/*`): those are plain bytes here.
fn upload_type(claimed: &str) -> ContentType {
    let structural = ["message/", "multipart/"].iter().any(|p| claimed.trim().to_ascii_lowercase().starts_with(p));
    match ContentType::parse(claimed) {
        Ok(t) if !structural => t,
        _ => ContentType::parse("application/octet-stream").expect("a valid content type"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::parse;

    fn sender() -> Sender<'static> {
        Sender { helpdesk_name: "ACME\r\nBcc: x@evil.example", from: "support@helpdesk.example", from_name: "ACME" }
    }

    #[test]
    fn portal_mail_is_automatic_belongs_to_no_ticket_and_carries_only_the_link() {
        let link = "https://help.example/portal/sign-in?token=abc";
        let mail = sign_in_mail(&sender(), "ann@acme.example", link, 15, [7; 16]);
        assert_eq!(mail.kind, MailKind::SignIn);
        assert_eq!(mail.kind.auto_submitted(), Some("auto-generated"));
        assert!(mail.body.contains(link) && mail.body.contains("15 minutes"), "{}", mail.body);
        assert_eq!(mail.subject, "Sign in to ACME Bcc: x@evil.example", "no header injection");
        assert!(mail.message_id.starts_with("sign_in.") && mail.message_id.ends_with("@helpdesk.example"));
        let confirm = confirm_mail(&sender(), "bo@beta.example", link, 60, [8; 16]);
        assert_eq!(confirm.kind, MailKind::Confirm);
        assert!(confirm.body.contains("60 minutes") && confirm.body.contains(link));
        assert_ne!(mail.message_id, confirm.message_id);
    }

    fn written<'a>(body: &'a str, uploads: &'a [Upload], refs: &'a [String]) -> Written<'a> {
        Written {
            from: "ann@acme.example",
            from_name: Some("Ann Émile"),
            to: "support@helpdesk.example",
            subject: "Grüße [Ticket#2026112310000017]",
            body,
            in_reply_to: refs.last().map(String::as_str),
            references: refs,
            uploads,
            date: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            random: [1; 16],
        }
    }

    /// What the form wrote is what the pipeline reads back.
    #[test]
    fn a_written_message_parses_back_to_what_was_written() {
        let uploads =
            [Upload { name: "screen.png".into(), content_type: "image/png".into(), bytes: vec![0x89, b'P', 0, 1] }];
        let refs = vec!["m1@acme.example".to_owned(), "ack.x@helpdesk.example".to_owned()];
        let raw = compose(&written("It broke again.\r\nSee the picture.", &uploads, &refs)).unwrap();
        let inbound = parse::parse(&raw, "X-Postdesk-Loop").unwrap();
        assert_eq!(inbound.from.as_ref().map(|f| f.address.as_str()), Some("ann@acme.example"));
        assert_eq!(inbound.subject, "Grüße [Ticket#2026112310000017]");
        assert_eq!(inbound.text_body.replace("\r\n", "\n").trim_end(), "It broke again.\nSee the picture.");
        assert_eq!(inbound.in_reply_to, ["ack.x@helpdesk.example"]);
        assert_eq!(inbound.references, refs);
        assert_eq!(inbound.attachments.len(), 1);
        assert_eq!((inbound.attachments[0].filename.as_str(), inbound.attachments[0].content.len()), ("screen.png", 4));
        assert!(inbound.message_id.as_deref().is_some_and(|id| id.starts_with("portal.")));
    }

    #[test]
    fn an_empty_form_is_refused() {
        assert_eq!(compose(&written(" \n", &[], &[])).unwrap_err(), WrittenError::Empty);
        let no_subject = Written { subject: "\r\n", ..written("text", &[], &[]) };
        assert_eq!(compose(&no_subject).unwrap_err(), WrittenError::NoSubject);
        let bad = Written { from: "not an address", ..written("text", &[], &[]) };
        assert_eq!(compose(&bad).unwrap_err(), WrittenError::Address("not an address".into()));
    }
}
