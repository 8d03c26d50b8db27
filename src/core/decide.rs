//! The decision for one message: classification, route, customer and acknowledgement,
//! from the parsed message, the facts the store gathered, the policy and the time.
//! Pure: everything it needs comes in as arguments, so it is tested table-driven.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::ack::{self, AckDecision, AckInput, AckPolicy};
use super::address;
use super::classify::{self, Kind};
use super::parse::Inbound;
use super::resolve::{self, Customer, Organisation, ResolvePolicy, Sender, SenderFacts};
use super::route::{self, Gate, KnownTicket, Referral, Route, RouteFacts, State, Via};
use super::ticket_number;
use super::trust::{self, Authentication, FollowUpFrom, SenderTrust};

#[derive(Debug)]
pub struct Policy {
    pub resolve: ResolvePolicy,
    pub ack: AckPolicy,
    /// Our helpdesk addresses, normalised; the first one answers when a message did not
    /// arrive through a known mailbox.
    pub own_addresses: Vec<String>,
    /// The text inside the subject tag before the number: `Ticket#` makes `[Ticket#N]`.
    pub tag_prefix: String,
    pub loop_header: String,
    pub reopen_closed: bool,
    pub follow_up_from: FollowUpFrom,
    pub max_message_bytes: usize,
}

impl Policy {
    /// The domains our own Message-IDs are under: those of our addresses and the
    /// internal domains.
    pub fn our_domains(&self) -> Vec<String> {
        let mut domains: Vec<String> = self.resolve.internal_domains.clone();
        for a in &self.own_addresses {
            let d = address::domain_of(a).to_owned();
            if !d.is_empty() && !domains.contains(&d) {
                domains.push(d);
            }
        }
        domains
    }
}

/// One of our acknowledgements that a delivery report names.
#[derive(Debug, Clone, PartialEq)]
pub struct OurAck {
    pub outbox_id: i64,
    pub ticket: KnownTicket,
}

/// What the store knows that the decision depends on.
#[derive(Debug, Default)]
pub struct Facts {
    pub route: RouteFacts,
    pub sender: SenderFacts,
    /// Acknowledgements to the sender's mailbox (`ack::mailbox_key`) in the last 24 h,
    /// counted up to the per-sender limit.
    pub recent_acks_to_recipient: u32,
    /// Acknowledgements to the sender's domain in the last 24 h, up to the domain limit.
    pub recent_acks_to_domain: u32,
    /// The first of our acknowledgements whose Message-ID the message quotes.
    pub quoted_ack: Option<OurAck>,
    /// The message is one of our own acknowledgements come back: its Message-ID is in
    /// our outbox and its loop header names it.
    pub own_message: bool,
    /// The sequence number the next ticket of today gets (1-based).
    pub next_seq_today: u32,
    /// Whether this very message is stored already.
    pub seen: Seen,
}

/// How and where a message arrived, beside its bytes: not facts of the store, not
/// policy, and randomness the core may not make itself.
#[derive(Debug, Clone)]
pub struct Arrival<'a> {
    /// The helpdesk address the message arrived at (normalised).
    pub mailbox_address: &'a str,
    /// What the receiving server we trust recorded about the message.
    pub authentication: Authentication,
    /// For the Message-ID of an acknowledgement.
    pub random: [u8; 16],
    pub now: DateTime<Utc>,
    /// Written in the portal or the support form by a customer user who signed in or
    /// confirmed the address: a person's message, whatever its text looks like, so no
    /// automated kind (a bounce quoted in the text, a JSON notification) applies.
    pub written_by_person: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewTicket {
    pub number: String,
    pub seq: u32,
    pub respond_by: Option<DateTime<Utc>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_unknown(a: &Authentication) -> bool {
    *a == Authentication::Unknown
}

/// What was made of a message whatever becomes of it: what kind of mail it is, who sent
/// it, whom it is filed under, what the receiving server said of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    pub classification: Vec<Kind>,
    /// `None` when no header holds a usable address (e.g. a bare `MAILER-DAEMON`).
    pub sender: Option<Sender>,
    pub customer: Customer,
    #[serde(skip_serializing_if = "is_unknown")]
    pub authentication: Authentication,
    /// The message's own Message-ID is in the format of ours: it is not recorded for
    /// follow-up matching, so that it cannot take the place of one of ours.
    #[serde(skip_serializing_if = "is_false")]
    pub claims_our_message_id: bool,
    /// A different message with the same Message-ID is on this ticket (number).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_message_id: Option<String>,
}

impl Judgement {
    /// Whether the message's Message-ID may be recorded for follow-up matching.
    pub fn records_message_id(&self) -> bool {
        !self.claims_our_message_id
    }
}

/// What becomes of one message; each outcome carries only what is valid for it. (One
/// exists per message and is moved once: boxing the large variants would buy nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Decision {
    /// The same message was stored before: nothing is written but the ledger entry.
    Duplicate {
        #[serde(skip)]
        ticket_id: i64,
        ticket: String,
        reason: &'static str,
    },
    New {
        #[serde(flatten)]
        message: Judgement,
        ticket: NewTicket,
        ack: AckDecision,
        /// Opened instead of a follow-up the sender may not write: the ticket it
        /// pointed at.
        #[serde(skip_serializing_if = "Option::is_none")]
        referred: Option<Referral>,
    },
    FollowUp {
        #[serde(flatten)]
        message: Judgement,
        ticket: KnownTicket,
        via: Via,
        /// The state the follow-up moves its ticket to, if it changes.
        #[serde(skip_serializing_if = "Option::is_none")]
        state: Option<State>,
    },
    /// A delivery report for one of our acknowledgements: attached to that ticket as an
    /// internal article, the acknowledgement marked bounced; no new ticket.
    AckBounce {
        #[serde(flatten)]
        message: Judgement,
        ticket: KnownTicket,
        outbox_id: i64,
        diagnostic: String,
    },
}

impl Decision {
    /// What was made of the message; none for a duplicate, which is not looked at again.
    pub fn judgement(&self) -> Option<&Judgement> {
        match self {
            Decision::Duplicate { .. } => None,
            Decision::New { message, .. }
            | Decision::FollowUp { message, .. }
            | Decision::AckBounce { message, .. } => Some(message),
        }
    }
}

/// Whether the store holds this message already (`identity::content_digest` with its
/// Message-ID), as `gather` found.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Seen {
    /// Never seen.
    #[default]
    New,
    /// The same message: the ticket (id, number) it went to.
    Duplicate(i64, String),
    /// A different message with the same Message-ID is on this ticket (number).
    ReusedMessageId(String),
}

pub fn decide(
    inbound: &Inbound,
    sender: Option<Sender>,
    facts: &Facts,
    policy: &Policy,
    arrival: &Arrival,
) -> Decision {
    if let Seen::Duplicate(ticket_id, ticket) = &facts.seen {
        let reason = if inbound.message_id.is_some() { "same Message-ID and content" } else { "same content" };
        return Decision::Duplicate { ticket_id: *ticket_id, ticket: ticket.clone(), reason };
    }
    let resolved = match &sender {
        Some(s) => resolve::resolve(s, &facts.sender, &policy.resolve),
        None => Customer::None { reason: "no usable sender address" },
    };
    let sender_trust = sender_trust(sender.as_ref(), &resolved, facts, policy, arrival.authentication);
    let message = judge(inbound, sender, resolved, facts, policy, arrival);
    if let (true, Some(quoted)) = (message.classification.contains(&Kind::Bounce), &facts.quoted_ack) {
        return Decision::AckBounce {
            message,
            ticket: quoted.ticket.clone(),
            outbox_id: quoted.outbox_id,
            diagnostic: diagnostic(inbound),
        };
    }
    let gate = Gate { rule: policy.follow_up_from, sender: &sender_trust, authentication: arrival.authentication };
    match route::route(&facts.route, &gate, policy.reopen_closed) {
        (Route::FollowUp { ticket, via, reopen }, _) => {
            let state = match ticket.state {
                State::Closed if reopen => Some(State::Open),
                State::Pending => Some(State::Open),
                _ => None,
            };
            Decision::FollowUp { message, ticket, via, state }
        }
        (Route::New, referred) => new_ticket(inbound, message, referred, facts, policy, arrival),
    }
}

/// Classification, sender and customer of a message. A message its domain's owner
/// disowns (dmarc=fail), or an automated one, is not filed under the customer user it
/// claims to be, nor does it create one.
fn judge(
    inbound: &Inbound,
    sender: Option<Sender>,
    resolved: Customer,
    facts: &Facts,
    policy: &Policy,
    arrival: &Arrival,
) -> Judgement {
    let authentication = arrival.authentication;
    let mut classification = match arrival.written_by_person {
        true => Vec::new(),
        false => classify::classify(inbound, &policy.own_addresses),
    };
    // The no-reply rule reads From; with `customer_address = "reply-to"` the customer is
    // the person a web form names (sent from no-reply@), whom the acknowledgement is for.
    if sender.as_ref().is_some_and(|s| !resolve::is_automated_sender(&s.email)) {
        classification.retain(|k| *k != Kind::NoReply);
    }
    let customer = match resolved {
        Customer::None { .. } => resolved,
        _ if is_automated(sender.as_ref(), &classification) => Customer::None { reason: "automated sender" },
        _ if authentication == Authentication::Fail => Customer::None { reason: "failed DMARC" },
        _ => resolved,
    };
    let claims_our_message_id = !facts.own_message
        && inbound.message_id.as_deref().is_some_and(|id| trust::is_our_format(id, &policy.our_domains()));
    let reused_message_id = match &facts.seen {
        Seen::ReusedMessageId(number) => Some(number.clone()),
        _ => None,
    };
    Judgement { classification, sender, customer, authentication, claims_our_message_id, reused_message_id }
}

fn is_automated(sender: Option<&Sender>, classification: &[Kind]) -> bool {
    sender.is_some_and(|s| resolve::is_automated_sender(&s.email))
        || classification.iter().any(|k| matches!(k, Kind::Bounce | Kind::AutoReply | Kind::Spam))
}

/// A new ticket: its number, its first-response deadline, and whether to acknowledge it.
fn new_ticket(
    inbound: &Inbound,
    message: Judgement,
    referred: Option<Referral>,
    facts: &Facts,
    policy: &Policy,
    arrival: &Arrival,
) -> Decision {
    let now = arrival.now;
    let seq = facts.next_seq_today;
    let number = ticket_number::format(now.date_naive(), seq);
    let respond_by = message.customer.first_response_hours().map(|h| now + Duration::hours(h));
    let tag = ticket_number::tag(&policy.tag_prefix, &number);
    let sender = message.sender.as_ref();
    let ack = ack::decide(
        &AckInput {
            inbound,
            classification: &message.classification,
            to: sender,
            automated_sender: sender.is_some_and(|s| resolve::is_automated_sender(&s.email)),
            authentication: arrival.authentication,
            ticket_number: &number,
            tag: &tag,
            helpdesk_address: arrival.mailbox_address,
            organisation: message.customer.organisation_name(),
            own_addresses: &policy.own_addresses,
            internal_domains: &policy.resolve.internal_domains,
            extra_free_mail: &policy.resolve.extra_free_mail,
            recent_to_recipient: facts.recent_acks_to_recipient,
            recent_to_domain: facts.recent_acks_to_domain,
            random: arrival.random,
        },
        &policy.ack,
    );
    Decision::New { message, ticket: NewTicket { number, seq, respond_by }, ack, referred }
}

/// The helpdesk address a message counts against: the mailbox it came through, else the
/// first of our addresses among its recipients, else the main address.
pub fn helpdesk_address(inbound: &Inbound, arrived_at: Option<&str>, policy: &Policy, main: &str) -> String {
    if let Some(address) = arrived_at {
        return address.to_owned();
    }
    inbound
        .to
        .iter()
        .chain(&inbound.cc)
        .filter_map(|m| address::normalise(&m.address))
        .find(|a| policy.own_addresses.contains(a))
        .unwrap_or_else(|| main.to_owned())
}

/// How the sender stands for trust: ours or not, their organisations (as resolved,
/// before automated senders lose their customer user), what DMARC said.
fn sender_trust(
    sender: Option<&Sender>,
    resolved: &Customer,
    facts: &Facts,
    policy: &Policy,
    authentication: Authentication,
) -> SenderTrust {
    let ours = sender
        .is_some_and(|s| policy.own_addresses.contains(&s.email) || resolve::is_internal(&s.email, &policy.resolve));
    let mut organisations: Vec<i64> = match resolved {
        Customer::Existing(c) => c.organisation.iter().map(|o| o.id).collect(),
        Customer::Create { organisation: Organisation::Existing(o), .. } => vec![o.id],
        _ => Vec::new(),
    };
    if matches!(resolved, Customer::Existing(_)) {
        organisations.extend(&facts.route.sender_linked_organisations);
    }
    SenderTrust { ours, organisations, dmarc_pass: authentication == Authentication::Pass }
}

/// What a delivery report says went wrong: its `Diagnostic-Code` and `Status` fields
/// (from the text or the `message/delivery-status` part), else the first lines of its
/// text.
fn diagnostic(inbound: &Inbound) -> String {
    let reports = inbound
        .attachments
        .iter()
        .filter(|a| a.content_type.contains("delivery-status"))
        .map(|a| String::from_utf8_lossy(&a.content[..a.content.len().min(64 * 1024)]).into_owned());
    let texts: Vec<String> = std::iter::once(inbound.text_body.clone()).chain(reports).collect();
    let mut fields: Vec<String> = Vec::new();
    for text in &texts {
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            let line = line.trim_start_matches(|c: char| c == '>' || c.is_whitespace());
            let lower = line.to_ascii_lowercase();
            if !(lower.starts_with("diagnostic-code:") || lower.starts_with("status:")) {
                continue;
            }
            let mut field = line.to_owned();
            while let Some(next) = lines.next_if(|l| l.starts_with([' ', '\t'])) {
                field.push(' ');
                field.push_str(next.trim());
            }
            let field = ack::header_safe(&field, 300);
            if !fields.contains(&field) && fields.len() < 4 {
                fields.push(field);
            }
        }
    }
    let text = if fields.is_empty() {
        inbound.text_body.lines().map(str::trim).filter(|l| !l.is_empty()).take(3).collect::<Vec<_>>().join(" ")
    } else {
        fields.join("; ")
    };
    ack::header_safe(&text, 500)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::ack::AckTemplate;
    use crate::core::parse::parse;
    use crate::core::resolve::CustomerFact;
    use crate::core::resolve::{AddressSource, OrgFact};
    use crate::core::route::{Candidate, KnownTicket, Via};
    use crate::core::trust::{Refusal, TicketTrust};
    use chrono::TimeZone;

    pub(crate) fn policy() -> Policy {
        Policy {
            resolve: ResolvePolicy {
                prefer: AddressSource::From,
                auto_create_customers: true,
                auto_create_organisations: true,
                extra_free_mail: vec![],
                internal_domains: vec!["helpdesk.example".to_owned()],
            },
            ack: AckPolicy {
                enabled: true,
                from_name: "Support".to_owned(),
                helpdesk_name: "Support".to_owned(),
                max_per_sender_per_day: 10,
                max_per_domain_per_day: 50,
                show_organisation: false,
                template: AckTemplate::new("{{ ticket_number }}".to_owned()).unwrap(),
            },
            own_addresses: vec!["support@helpdesk.example".to_owned()],
            tag_prefix: "Ticket#".to_owned(),
            loop_header: "X-Postdesk-Loop".to_owned(),
            reopen_closed: true,
            follow_up_from: FollowUpFrom::Organisation,
            max_message_bytes: 1 << 20,
        }
    }

    fn run_with(raw: &str, facts: &Facts, authentication: Authentication) -> Decision {
        let inbound = parse(raw.as_bytes(), "X-Postdesk-Loop").unwrap();
        let sender = resolve::sender(&inbound, AddressSource::From);
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 9, 30, 0).unwrap();
        let arrival = Arrival {
            mailbox_address: "support@helpdesk.example",
            authentication,
            random: [1; 16],
            now,
            written_by_person: false,
        };
        decide(&inbound, sender, facts, &policy(), &arrival)
    }

    fn run(raw: &str, facts: &Facts) -> Decision {
        run_with(raw, facts, Authentication::Unknown)
    }

    /// `queued`, why not, or what kind of message had none to decide.
    fn ack(d: &Decision) -> String {
        match d {
            Decision::New { ack, .. } => ack.summary(),
            Decision::FollowUp { .. } => "follow-up".to_owned(),
            Decision::AckBounce { .. } => "bounce".to_owned(),
            Decision::Duplicate { .. } => "duplicate".to_owned(),
        }
    }

    fn judged(d: &Decision) -> &Judgement {
        d.judgement().expect("not a duplicate")
    }

    fn new_of(d: &Decision) -> Option<NewTicket> {
        match d {
            Decision::New { ticket, .. } => Some(ticket.clone()),
            _ => None,
        }
    }

    fn state_of(d: &Decision) -> Option<State> {
        match d {
            Decision::FollowUp { state, .. } => *state,
            _ => None,
        }
    }

    fn referred_of(d: &Decision) -> Option<&Referral> {
        match d {
            Decision::New { referred, .. } => referred.as_ref(),
            _ => None,
        }
    }

    fn acme() -> OrgFact {
        OrgFact { id: 1, name: "ACME".to_owned(), first_response_hours: None }
    }

    fn candidate(trust: TicketTrust) -> Option<Candidate> {
        Some(Candidate { ticket: KnownTicket { id: 4, number: "N4".to_owned(), state: State::Open }, trust })
    }

    #[test]
    fn a_message_stored_before_is_a_duplicate_and_a_reused_message_id_is_noted() {
        let raw = "From: a@acme.com\r\nMessage-ID: <m@acme.com>\r\n\r\nx";
        let seen = |seen| Facts { seen, ..Facts::default() };
        let d = run(raw, &seen(Seen::Duplicate(7, "N7".to_owned())));
        let want = Decision::Duplicate { ticket_id: 7, ticket: "N7".to_owned(), reason: "same Message-ID and content" };
        assert_eq!(d, want);
        let d = run("From: a@acme.com\r\n\r\nx", &seen(Seen::Duplicate(7, "N7".to_owned())));
        assert!(matches!(d, Decision::Duplicate { reason: "same content", .. }), "{d:?}");
        let d = run(raw, &seen(Seen::ReusedMessageId("N7".to_owned())));
        assert!(new_of(&d).is_some(), "{d:?}");
        assert_eq!(judged(&d).reused_message_id.as_deref(), Some("N7"));
    }

    #[test]
    fn a_new_ticket_gets_a_number_an_sla_and_an_ack() {
        let facts = Facts {
            next_seq_today: 17,
            sender: SenderFacts {
                customer: None,
                domain_owner: Some(OrgFact { id: 1, name: "ACME".to_owned(), first_response_hours: Some(4) }),
            },
            ..Facts::default()
        };
        let d = run("From: a@acme.com\r\nSubject: Help\r\n\r\nx", &facts);
        let ticket = new_of(&d).expect("a new ticket");
        assert_eq!(ticket.number, ticket_number::format(chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(), 17));
        assert_eq!(ticket.respond_by.unwrap().to_rfc3339(), "2026-11-23T13:30:00+00:00");
        assert_eq!(judged(&d).customer.organisation_name(), Some("ACME"));
        assert!(matches!(d, Decision::New { ack: AckDecision::Queue(_), .. }));
    }

    #[test]
    fn follow_ups_change_state_and_are_never_acknowledged() {
        let known = |state| RouteFacts {
            referenced: Some(Candidate {
                ticket: KnownTicket { id: 4, number: "N".to_owned(), state },
                trust: TicketTrust { sender_is_customer: true, ..TicketTrust::default() },
            }),
            ..RouteFacts::default()
        };
        let cases = [(State::Closed, Some(State::Open)), (State::Pending, Some(State::Open)), (State::Open, None)];
        for (state, want) in cases {
            let facts = Facts { route: known(state), ..Facts::default() };
            let d = run("From: a@acme.com\r\nIn-Reply-To: <x@y>\r\n\r\nx", &facts);
            assert_eq!(state_of(&d), want, "{state:?}");
            assert_eq!(new_of(&d), None);
            assert_eq!(ack(&d), "follow-up");
        }
    }

    #[test]
    fn automated_mail_makes_a_ticket_without_an_ack() {
        let d = run("From: a@acme.com\r\nAuto-Submitted: auto-replied\r\n\r\nx", &Facts::default());
        assert!(new_of(&d).is_some());
        assert_eq!(judged(&d).classification, vec![Kind::AutoReply]);
        assert_eq!(ack(&d), "auto-reply");
    }

    #[test]
    fn a_sender_without_an_address_still_makes_a_ticket() {
        let d = run("From: Mail Delivery Subsystem <MAILER-DAEMON>\r\nSubject: failure\r\n\r\nx", &Facts::default());
        assert!(new_of(&d).is_some());
        assert_eq!(judged(&d).customer, Customer::None { reason: "no usable sender address" });
        assert_eq!(ack(&d), "bounce");
    }

    #[test]
    fn who_may_write_into_a_ticket() {
        let tagged = "From: Eve <eve@acme.com>\r\nSubject: Re: [Ticket#N4] x\r\n\r\nx";
        let acme_ticket = TicketTrust { organisations: vec![1], ..TicketTrust::default() };
        let colleague = SenderFacts { customer: None, domain_owner: Some(acme()) };
        let linked_customer =
            SenderFacts { customer: Some(CustomerFact { id: 9, name: None, organisation: None }), domain_owner: None };
        let rf = |trust: TicketTrust, linked: Vec<i64>| RouteFacts {
            tagged: candidate(trust),
            referenced: None,
            sender_linked_organisations: linked,
        };
        let on_ticket = TicketTrust { sender_on_ticket: true, ..TicketTrust::default() };
        // (message, facts, authentication, follow-up?, referral)
        let cases: Vec<(&str, Facts, Authentication, bool, Option<Refusal>)> = vec![
            (
                tagged,
                Facts { route: rf(on_ticket.clone(), vec![]), ..Facts::default() },
                Authentication::Unknown,
                true,
                None,
            ),
            // A new sender of a domain the ticket's organisation owns is of that organisation.
            (
                tagged,
                Facts { route: rf(acme_ticket.clone(), vec![]), sender: colleague.clone(), ..Facts::default() },
                Authentication::Unknown,
                true,
                None,
            ),
            // A known customer linked to the ticket's organisation.
            (
                tagged,
                Facts { route: rf(acme_ticket.clone(), vec![1]), sender: linked_customer, ..Facts::default() },
                Authentication::Unknown,
                true,
                None,
            ),
            // A stranger guessing a ticket number.
            (
                "From: mallory@evil.example\r\nSubject: [Ticket#N4]\r\n\r\nx",
                Facts { route: rf(acme_ticket.clone(), vec![]), ..Facts::default() },
                Authentication::Unknown,
                false,
                Some(Refusal::NotOnTicket),
            ),
            // Our own address without proof, though it is on the ticket (in To).
            (
                "From: support@helpdesk.example\r\nSubject: [Ticket#N4]\r\n\r\nx",
                Facts { route: rf(on_ticket.clone(), vec![]), ..Facts::default() },
                Authentication::Unknown,
                false,
                Some(Refusal::UnprovenOwnAddress),
            ),
            (
                tagged,
                Facts { route: rf(on_ticket, vec![]), sender: colleague, ..Facts::default() },
                Authentication::Fail,
                false,
                Some(Refusal::DmarcFail),
            ),
        ];
        for (i, (raw, facts, auth, follow_up, refusal)) in cases.into_iter().enumerate() {
            let d = run_with(raw, &facts, auth);
            assert_eq!(matches!(d, Decision::FollowUp { .. }), follow_up, "case {i}: {d:?}");
            assert_eq!(referred_of(&d).as_ref().map(|r| r.refusal), refusal, "case {i}");
            if let Some(r) = &referred_of(&d) {
                assert_eq!((r.ticket.as_str(), r.via), ("N4", Via::Tag));
                assert!(new_of(&d).is_some());
            }
        }
    }

    #[test]
    fn dmarc_fail_gets_no_ack_and_is_marked() {
        let known = SenderFacts {
            customer: Some(CustomerFact { id: 3, name: None, organisation: Some(acme()) }),
            domain_owner: Some(acme()),
        };
        let d =
            run_with("From: a@acme.com\r\n\r\nx", &Facts { sender: known, ..Facts::default() }, Authentication::Fail);
        assert_eq!(ack(&d), "failed DMARC");
        assert_eq!(judged(&d).customer, Customer::None { reason: "failed DMARC" });
        assert_eq!(judged(&d).authentication, Authentication::Fail);
    }

    /// A web form sends from no-reply@ on a person's behalf: with the customer address
    /// taken from Reply-To, that person is the customer and gets the acknowledgement.
    #[test]
    fn a_web_form_from_no_reply_acknowledges_the_person_it_names() {
        let raw = "From: Web <no-reply@forms.acme.com>\r\nReply-To: Judy <judy@acme.com>\r\nSubject: s\r\n\r\nx";
        let inbound = parse(raw.as_bytes(), "X-Postdesk-Loop").unwrap();
        let mut policy = policy();
        policy.resolve.prefer = AddressSource::ReplyTo;
        let sender = resolve::sender(&inbound, AddressSource::ReplyTo);
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 9, 30, 0).unwrap();
        let arrival = Arrival {
            mailbox_address: "support@helpdesk.example",
            authentication: Authentication::Unknown,
            random: [1; 16],
            now,
            written_by_person: false,
        };
        let d = decide(&inbound, sender, &Facts::default(), &policy, &arrival);
        assert!(!judged(&d).classification.contains(&Kind::NoReply), "{:?}", judged(&d).classification);
        assert_eq!(ack(&d), "queued");
        // Read from From, the same form mail is the no-reply sender's: not acknowledged.
        assert_eq!(ack(&run(raw, &Facts::default())), "no-reply");
    }

    #[test]
    fn automated_senders_are_not_customers() {
        let known = || SenderFacts {
            customer: Some(CustomerFact { id: 3, name: None, organisation: Some(acme()) }),
            domain_owner: Some(acme()),
        };
        let cases = [
            ("From: no-reply@acme.com\r\n\r\nx", "no-reply"),
            ("From: postmaster@acme.com\r\n\r\nx", "bounce"),
            ("From: a@acme.com\r\nAuto-Submitted: auto-replied\r\n\r\nx", "auto-reply"),
            ("From: a@acme.com\r\nX-Spam-Flag: YES\r\n\r\nx", "spam"),
            ("From: a@acme.com\r\nReturn-Path: <>\r\n\r\nx", "bounce"),
        ];
        for (raw, want) in cases {
            let d = run(raw, &Facts { sender: known(), ..Facts::default() });
            assert_eq!(judged(&d).customer, Customer::None { reason: "automated sender" }, "{raw}");
            assert_eq!(ack(&d), want, "{raw}");
        }
        let person = run("From: a@acme.com\r\n\r\nx", &Facts { sender: known(), ..Facts::default() });
        assert!(matches!(judged(&person).customer, Customer::Existing(_)));
    }

    #[test]
    fn a_bounce_of_our_acknowledgement_goes_to_its_ticket() {
        let raw = "From: MAILER-DAEMON@mx.acme.com\r\nReturn-Path: <>\r\nSubject: Undelivered\r\n\r\n\
                   Final-Recipient: rfc822; x@acme.com\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1\r\n \
                   user unknown\r\n";
        let quoted =
            OurAck { outbox_id: 8, ticket: KnownTicket { id: 4, number: "N4".to_owned(), state: State::Closed } };
        let d = run(raw, &Facts { quoted_ack: Some(quoted), ..Facts::default() });
        let Decision::AckBounce { ticket, outbox_id, diagnostic, .. } = &d else { panic!("{d:?}") };
        assert_eq!((ticket.id, *outbox_id), (4, 8));
        assert_eq!(diagnostic, "Status: 5.1.1; Diagnostic-Code: smtp; 550 5.1.1 user unknown");
        assert_eq!((new_of(&d).is_none(), state_of(&d)), (true, None));
        // Not a bounce: a customer forwarding our acknowledgement is mail like any other.
        let quoted =
            OurAck { outbox_id: 8, ticket: KnownTicket { id: 4, number: "N4".to_owned(), state: State::Open } };
        let d = run("From: a@acme.com\r\n\r\nfwd", &Facts { quoted_ack: Some(quoted), ..Facts::default() });
        assert!(matches!(d, Decision::New { .. }));
    }

    #[test]
    fn an_inbound_message_cannot_claim_our_message_id() {
        let d = run(
            "From: a@acme.com\r\nMessage-ID: <ack.2026112310000021.x@helpdesk.example>\r\n\r\nx",
            &Facts::default(),
        );
        assert!(judged(&d).claims_our_message_id && !judged(&d).records_message_id());
        let d = run("From: a@acme.com\r\nMessage-ID: <m1@acme.com>\r\n\r\nx", &Facts::default());
        assert!(judged(&d).records_message_id());
        // One of ours come back claims nothing.
        let ours = "From: support@helpdesk.example\r\nMessage-ID: <ack.2026112310000021.x@helpdesk.example>\r\n\r\nx";
        assert!(
            !run(ours, &Facts { own_message: true, ..Facts::default() }).judgement().unwrap().claims_our_message_id
        );
    }
}
