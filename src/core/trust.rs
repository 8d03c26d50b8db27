//! Trust: who may write into an existing ticket, whether a message proves it came from
//! us, what the receiving server we trust says about its authentication, and which of
//! our own Message-IDs a message names. Pure: the store gathers the facts (addresses on
//! a ticket, its organisations, our acknowledgements); this decides. Never trusts a
//! header value a sender can forge on its own.

use serde::{Deserialize, Serialize};

use super::address;

/// `[tickets] follow_up_from`: who may add a follow-up to a ticket by its subject tag or
/// by a reference to one of its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FollowUpFrom {
    /// The ticket's customer user, an address already on the ticket, or us.
    Participants,
    /// The participants, and customer users of the ticket's organisation or of one its
    /// customer user is linked to.
    Organisation,
    /// Anyone (the behaviour of helpdesks that trust ticket numbers; not recommended).
    Anyone,
}

/// What the store knows about one ticket a message points at, measured against the
/// message's sender.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TicketTrust {
    /// The sender is one of the addresses of the ticket's customer user.
    pub sender_is_customer: bool,
    /// The sender's address is on the ticket: its customer address or the From, To or
    /// Cc of one of its articles.
    pub sender_on_ticket: bool,
    /// The ticket's organisation, and the primary and linked organisations of its
    /// customer user: their customer users may write under `Organisation`.
    pub organisations: Vec<i64>,
    /// The message carries our loop header naming one of this ticket's acknowledgements:
    /// with one of our addresses in From, proof that the mail came from us.
    pub our_loop_token: bool,
}

/// The sender, as far as trust is concerned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SenderTrust {
    /// The sender's address is one of ours or in an internal domain: it is trusted only
    /// when the message proves it came from us.
    pub ours: bool,
    /// The organisations the sender belongs to (primary and linked), or the one a new
    /// sender would join by their domain.
    pub organisations: Vec<i64>,
    /// The receiving server we trust says the message passed DMARC.
    pub dmarc_pass: bool,
}

/// Why a message may not be a follow-up to the ticket it points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Refusal {
    /// The sender is not on the ticket (and, under `Organisation`, not in its organisations).
    NotOnTicket,
    /// The sender claims one of our addresses without proof that the mail came from us.
    UnprovenOwnAddress,
    /// The receiving server we trust recorded `dmarc=fail`.
    DmarcFail,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotOnTicket => "the sender is not on it",
            Refusal::UnprovenOwnAddress => "the sender claims to be us without proof",
            Refusal::DmarcFail => "the message failed DMARC",
        }
    }
}

/// Whether a message from `sender` may be a follow-up to the ticket `ticket` describes.
pub fn may_follow_up(
    ticket: &TicketTrust,
    sender: &SenderTrust,
    auth: Authentication,
    rule: FollowUpFrom,
) -> Result<(), Refusal> {
    if auth == Authentication::Fail {
        return Err(Refusal::DmarcFail);
    }
    // One of our addresses needs proof that the mail came from us: our loop header
    // naming this ticket's acknowledgement, or a DMARC pass the receiving server we
    // trust recorded. (A loop header alone proves nothing for anyone else: whoever saw
    // the acknowledgement knows its Message-ID.)
    if sender.ours {
        return if ticket.our_loop_token || sender.dmarc_pass { Ok(()) } else { Err(Refusal::UnprovenOwnAddress) };
    }
    let participant = ticket.sender_is_customer || ticket.sender_on_ticket;
    let member = sender.organisations.iter().any(|o| ticket.organisations.contains(o));
    let allowed = match rule {
        FollowUpFrom::Anyone => true,
        FollowUpFrom::Participants => participant,
        FollowUpFrom::Organisation => participant || member,
    };
    if allowed {
        Ok(())
    } else {
        Err(Refusal::NotOnTicket)
    }
}

/// What the receiving server we trust (`[[mailbox]] authserv_id`) recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Authentication {
    /// No authserv-id is configured for the source, or no result of it is in the message.
    #[default]
    Unknown,
    Pass,
    /// `dmarc=fail`: the From domain's owner says this mail is not theirs.
    Fail,
    /// A DMARC result other than pass or fail (none, temperror, permerror, …).
    Other,
}

/// The header section of a raw message is looked at up to this many bytes.
const MAX_HEADER_BYTES: usize = 256 * 1024;

/// The unfolded values of every header called `name`, top to bottom, from the first
/// `MAX_HEADER_BYTES` of the header section.
pub fn header_values(raw: &[u8], name: &str) -> Vec<String> {
    let head = &raw[..raw.len().min(MAX_HEADER_BYTES)];
    let text = String::from_utf8_lossy(head);
    let mut values = Vec::new();
    let mut current: Option<String> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            if let Some(value) = current.as_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        values.extend(current.take());
        if line.is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            if n.trim_end().eq_ignore_ascii_case(name) {
                current = Some(v.trim().to_owned());
            }
        }
    }
    values.extend(current);
    values
}

/// The DMARC result the topmost `Authentication-Results` header of `authserv_id`
/// records (RFC 8601). The receiving server adds its header on top and removes forged
/// ones of its own id, so a lower header with our id is never read.
pub fn authentication(raw: &[u8], authserv_id: Option<&str>) -> Authentication {
    let Some(id) = authserv_id else {
        return Authentication::Unknown;
    };
    for value in header_values(raw, "Authentication-Results") {
        let value = strip_comments(&value);
        let mut parts = value.split(';');
        let server = parts.next().unwrap_or("").split_whitespace().next().unwrap_or("");
        if !server.eq_ignore_ascii_case(id) {
            continue;
        }
        // The topmost header of our server decides, with or without a DMARC result.
        return match parts.find_map(dmarc_result).as_deref() {
            Some("pass") => Authentication::Pass,
            Some("fail") => Authentication::Fail,
            Some(_) => Authentication::Other,
            None => Authentication::Unknown,
        };
    }
    Authentication::Unknown
}

/// The result of a `dmarc=RESULT …` resinfo, lower-cased.
fn dmarc_result(resinfo: &str) -> Option<String> {
    let resinfo = resinfo.trim().to_ascii_lowercase();
    let value = resinfo.strip_prefix("dmarc")?.trim_start().strip_prefix('=')?;
    Some(value.split_whitespace().next().unwrap_or("").to_owned())
}

/// RFC 5322 comments (`(…)`, nested) removed.
fn strip_comments(text: &str) -> String {
    let mut depth = 0usize;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The local part of our Message-IDs starts with this.
const OUR_ID_PREFIX: &str = "ack.";

/// An acknowledgement Message-ID: `ack.<ticket number>.<random>@<our domain>`. The
/// random part (128 bits, base32) makes it unguessable, so nobody can claim the id of
/// an acknowledgement to come.
pub fn our_message_id(ticket_number: &str, random: [u8; 16], domain: &str) -> String {
    format!("{OUR_ID_PREFIX}{ticket_number}.{}@{domain}", base32(&random))
}

/// The Message-ID of mail that is no acknowledgement and belongs to no ticket (a portal
/// sign-in link, a message written in the portal): `<kind>.<random>@<domain>`, which
/// nothing takes for one of our acknowledgements.
pub fn portal_message_id(kind: &str, random: [u8; 16], domain: &str) -> String {
    format!("{kind}.{}@{domain}", base32(&random))
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Whether a Message-ID is in the format of ours, under one of our domains (or a
/// subdomain): an inbound message that carries one is claiming to be us.
pub fn is_our_format(message_id: &str, our_domains: &[String]) -> bool {
    let Some((local, domain)) = message_id.rsplit_once('@') else {
        return false;
    };
    let domain = domain.to_ascii_lowercase();
    local.to_ascii_lowercase().starts_with(OUR_ID_PREFIX) && our_domains.iter().any(|d| address::is_within(&domain, d))
}

/// Message-IDs in the format of ours that appear anywhere in the first bytes of a
/// message (a bounce quotes the returned message's headers, with our Message-ID and our
/// loop header), lower-cased, at most `MAX_IDS`.
pub fn our_ids_in(raw: &[u8], our_domains: &[String]) -> Vec<String> {
    const MAX_SCAN: usize = 4 * 1024 * 1024;
    const MAX_IDS: usize = 16;
    let raw = &raw[..raw.len().min(MAX_SCAN)];
    let is_id_byte = |b: u8| b.is_ascii_alphanumeric() || b"._-@".contains(&b);
    let prefix = OUR_ID_PREFIX.as_bytes();
    let mut found: Vec<String> = Vec::new();
    // Found by the prefix's last byte, a dot: far fewer places to look at than every byte.
    for last in memchr::memchr_iter(prefix[prefix.len() - 1], raw) {
        let Some(i) = (last + 1).checked_sub(prefix.len()) else { continue };
        if !raw[i..=last].eq_ignore_ascii_case(prefix) || (i > 0 && is_id_byte(raw[i - 1])) {
            continue;
        }
        let end = raw[i..].iter().position(|&b| !is_id_byte(b)).map_or(raw.len(), |n| i + n);
        let token = String::from_utf8_lossy(&raw[i..end]).to_ascii_lowercase();
        if is_our_format(&token, our_domains) && !found.contains(&token) {
            found.push(token);
            if found.len() == MAX_IDS {
                break;
            }
        }
    }
    found
}

/// The Message-IDs our loop header values name (`support@helpdesk.example <ack.…>`).
pub fn loop_tokens(loop_values: &[String]) -> Vec<String> {
    loop_values
        .iter()
        .filter_map(|v| {
            let start = v.find('<')?;
            let end = start + v[start..].find('>')?;
            Some(v[start + 1..end].trim().to_ascii_lowercase())
        })
        .filter(|id| !id.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_follow_up() {
        use FollowUpFrom::*;
        let on = TicketTrust { sender_on_ticket: true, ..TicketTrust::default() };
        let customer = TicketTrust { sender_is_customer: true, ..TicketTrust::default() };
        let org7 = TicketTrust { organisations: vec![7], ..TicketTrust::default() };
        let looped = TicketTrust { our_loop_token: true, ..TicketTrust::default() };
        let stranger = SenderTrust::default();
        let colleague = SenderTrust { organisations: vec![3, 7], ..SenderTrust::default() };
        let ours = SenderTrust { ours: true, ..SenderTrust::default() };
        let ours_authenticated = SenderTrust { ours: true, dmarc_pass: true, ..SenderTrust::default() };
        let on_and_ours = TicketTrust { sender_on_ticket: true, ..TicketTrust::default() };
        use Authentication::{Fail, Pass, Unknown};
        type Case<'a> = (&'a TicketTrust, &'a SenderTrust, Authentication, FollowUpFrom, Result<(), Refusal>);
        let cases: &[Case] = &[
            (&customer, &stranger, Unknown, Participants, Ok(())),
            (&on, &stranger, Unknown, Participants, Ok(())),
            (&on, &stranger, Pass, Organisation, Ok(())),
            (&TicketTrust::default(), &stranger, Unknown, Organisation, Err(Refusal::NotOnTicket)),
            (&TicketTrust::default(), &stranger, Unknown, Anyone, Ok(())),
            (&org7, &colleague, Unknown, Organisation, Ok(())),
            (&org7, &colleague, Unknown, Participants, Err(Refusal::NotOnTicket)),
            (&org7, &stranger, Unknown, Organisation, Err(Refusal::NotOnTicket)),
            // Our own address: only with proof, even when it is on the ticket (it is in To).
            (&on_and_ours, &ours, Unknown, Anyone, Err(Refusal::UnprovenOwnAddress)),
            (&TicketTrust::default(), &ours_authenticated, Pass, Participants, Ok(())),
            (&looped, &ours, Unknown, Participants, Ok(())),
            (&looped, &stranger, Unknown, Participants, Err(Refusal::NotOnTicket)),
            // dmarc=fail: never a follow-up, whoever it claims to be.
            (&customer, &stranger, Fail, Anyone, Err(Refusal::DmarcFail)),
            (&looped, &ours, Fail, Anyone, Err(Refusal::DmarcFail)),
        ];
        for (i, (ticket, sender, auth, rule, want)) in cases.iter().enumerate() {
            assert_eq!(may_follow_up(ticket, sender, *auth, *rule), *want, "case {i}");
        }
    }

    #[test]
    fn authentication_results_of_our_server_only() {
        let msg = |headers: &str| format!("{headers}From: a@acme.example\r\n\r\nbody\r\n");
        let cases = [
            ("Authentication-Results: mx.helpdesk.example; dmarc=fail (p=reject) header.from=acme.example\r\n", Authentication::Fail),
            ("Authentication-Results: MX.Helpdesk.Example 1; spf=pass; dkim=pass;\r\n dmarc=pass header.from=acme.example\r\n", Authentication::Pass),
            ("Authentication-Results: mx.helpdesk.example (our mx); dmarc = none\r\n", Authentication::Other),
            ("Authentication-Results: mx.helpdesk.example; none\r\n", Authentication::Unknown),
            ("Authentication-Results: evil.example; dmarc=pass\r\n", Authentication::Unknown),
            // The topmost header of our server counts; a forged one below it does not.
            (
                "Authentication-Results: mx.helpdesk.example; dmarc=fail\r\nAuthentication-Results: mx.helpdesk.example; dmarc=pass\r\n",
                Authentication::Fail,
            ),
            ("", Authentication::Unknown),
        ];
        for (headers, want) in cases {
            assert_eq!(authentication(msg(headers).as_bytes(), Some("mx.helpdesk.example")), want, "{headers:?}");
        }
        let fail = msg("Authentication-Results: mx.helpdesk.example; dmarc=fail\r\n");
        assert_eq!(authentication(fail.as_bytes(), None), Authentication::Unknown);
        // A header in the body is not a header.
        let body = "From: a@acme.example\r\n\r\nAuthentication-Results: mx.helpdesk.example; dmarc=fail\r\n";
        assert_eq!(authentication(body.as_bytes(), Some("mx.helpdesk.example")), Authentication::Unknown);
    }

    #[test]
    fn our_message_ids() {
        let ours = vec!["helpdesk.example".to_owned()];
        let id = our_message_id("2026112310000017", [0xab; 16], "helpdesk.example");
        assert_eq!(id, "ack.2026112310000017.vov2xk5lvov2xk5lvov2xk5lvm@helpdesk.example");
        assert_ne!(id, our_message_id("2026112310000017", [0xac; 16], "helpdesk.example"));
        assert!(is_our_format(&id, &ours));
        assert!(is_our_format("ACK.2026112310000017@mx.Helpdesk.Example", &ours));
        assert!(!is_our_format("ack.1@acme.example", &ours));
        assert!(!is_our_format("req-1@helpdesk.example", &ours));

        let bounce = format!(
            "From: MAILER-DAEMON@mx.acme.example\r\n\r\n--b\r\nMessage-ID: <{id}>\r\nX-Postdesk-Loop: \
             support@helpdesk.example <{}>\r\nReferences: <ack.1@acme.example> back.2@helpdesk.example\r\n",
            id.to_uppercase()
        );
        assert_eq!(our_ids_in(bounce.as_bytes(), &ours), vec![id.clone()]);
        assert_eq!(our_ids_in(id.as_bytes(), &ours), vec![id.clone()]);
        assert_eq!(our_ids_in(format!("x{id}").as_bytes(), &ours), Vec::<String>::new());
        assert_eq!(
            loop_tokens(&[format!("support@helpdesk.example <{id}>"), "support@helpdesk.example".to_owned()]),
            vec![id]
        );
    }

    #[test]
    fn headers_are_unfolded_and_end_at_the_body() {
        let raw = b"Subject: a\r\n b\r\nX-A: 1\r\nx-a:2\r\n\r\nX-A: 3\r\n";
        assert_eq!(header_values(raw, "X-A"), vec!["1", "2"]);
        assert_eq!(header_values(raw, "subject"), vec!["a b"]);
    }
}
