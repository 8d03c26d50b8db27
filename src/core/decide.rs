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
use super::route::{self, Gate, KnownTicket, Referral, Route, RouteFacts, State};
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
    /// Acknowledgements to the sender's mailbox (`ack::mailbox_key`) in the last 24 h.
    pub recent_acks_to_recipient: u32,
    /// Acknowledgements to the sender's domain in the last 24 h.
    pub recent_acks_to_domain: u32,
    /// The first of our acknowledgements whose Message-ID the message quotes.
    pub quoted_ack: Option<OurAck>,
    /// The message is one of our own acknowledgements come back: its Message-ID is in
    /// our outbox and its loop header names it.
    pub own_message: bool,
    /// The sequence number the next ticket of today gets (1-based).
    pub next_seq_today: u32,
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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub classification: Vec<Kind>,
    /// `None` when no header holds a usable address (e.g. a bare `MAILER-DAEMON`).
    pub sender: Option<Sender>,
    pub customer: Customer,
    pub route: Route,
    /// A new ticket opened instead of a follow-up the sender may not write: the ticket
    /// it pointed at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referred: Option<Referral>,
    /// Set for a new ticket.
    pub new_ticket: Option<NewTicket>,
    /// The state a follow-up moves its ticket to, if it changes.
    pub follow_up_state: Option<State>,
    pub ack: AckDecision,
    #[serde(skip_serializing_if = "is_unknown")]
    pub authentication: Authentication,
    /// The message's own Message-ID is in the format of ours: it is not recorded for
    /// follow-up matching, so that it cannot take the place of one of ours.
    #[serde(skip_serializing_if = "is_false")]
    pub claims_our_message_id: bool,
}

impl Decision {
    /// Whether the message's Message-ID may be recorded for follow-up matching.
    pub fn records_message_id(&self) -> bool {
        !self.claims_our_message_id
    }
}

pub fn decide(
    inbound: &Inbound,
    sender: Option<Sender>,
    facts: &Facts,
    policy: &Policy,
    arrival: &Arrival,
) -> Decision {
    let now = arrival.now;
    let mut classification = classify::classify(inbound, &policy.own_addresses);
    // The no-reply rule reads From; with `customer_address = "reply-to"` the customer is
    // the person a web form names (sent from no-reply@), whom the acknowledgement is for.
    if sender.as_ref().is_some_and(|s| !resolve::is_automated_sender(&s.email)) {
        classification.retain(|k| *k != Kind::NoReply);
    }
    let automated_sender = sender.as_ref().is_some_and(|s| resolve::is_automated_sender(&s.email));
    let automated =
        automated_sender || classification.iter().any(|k| matches!(k, Kind::Bounce | Kind::AutoReply | Kind::Spam));
    let resolved = match &sender {
        Some(sender) => resolve::resolve(sender, &facts.sender, &policy.resolve),
        None => Customer::None { reason: "no usable sender address" },
    };
    let sender_trust = sender_trust(sender.as_ref(), &resolved, facts, policy, arrival.authentication);
    // A message its domain's owner disowns (dmarc=fail) is not filed under the customer
    // user it claims to be, nor does it create one.
    let customer = match resolved {
        Customer::None { .. } => resolved,
        _ if automated => Customer::None { reason: "automated sender" },
        _ if arrival.authentication == Authentication::Fail => Customer::None { reason: "failed DMARC" },
        _ => resolved,
    };
    let claims_our_message_id = !facts.own_message
        && inbound.message_id.as_deref().is_some_and(|id| trust::is_our_format(id, &policy.our_domains()));
    let base = |route, referred, new_ticket, follow_up_state, ack| Decision {
        classification: classification.clone(),
        sender: sender.clone(),
        customer: customer.clone(),
        route,
        referred,
        new_ticket,
        follow_up_state,
        ack,
        authentication: arrival.authentication,
        claims_our_message_id,
    };
    if let (true, Some(quoted)) = (classification.contains(&Kind::Bounce), &facts.quoted_ack) {
        let route = Route::AckBounce {
            ticket: quoted.ticket.clone(),
            outbox_id: quoted.outbox_id,
            diagnostic: diagnostic(inbound),
        };
        return base(route, None, None, None, AckDecision::Skip { reason: "bounce".to_owned() });
    }
    let gate = Gate { rule: policy.follow_up_from, sender: &sender_trust, authentication: arrival.authentication };
    let (route, referred) = route::route(&facts.route, &gate, policy.reopen_closed);
    match &route {
        Route::FollowUp { ticket, reopen, .. } => {
            let state = match ticket.state {
                State::Closed if *reopen => Some(State::Open),
                State::Pending => Some(State::Open),
                _ => None,
            };
            let ack = AckDecision::Skip { reason: "follow-up".to_owned() };
            base(route, referred, None, state, ack)
        }
        _ => {
            let number = ticket_number::format(now.date_naive(), facts.next_seq_today);
            let respond_by = customer.first_response_hours().map(|h| now + Duration::hours(h));
            let tag = ticket_number::tag(&policy.tag_prefix, &number);
            let ack = ack::decide(
                &AckInput {
                    inbound,
                    classification: &classification,
                    to: sender.as_ref(),
                    automated_sender,
                    authentication: arrival.authentication,
                    ticket_number: &number,
                    tag: &tag,
                    helpdesk_address: arrival.mailbox_address,
                    organisation: customer.organisation_name(),
                    own_addresses: &policy.own_addresses,
                    internal_domains: &policy.resolve.internal_domains,
                    extra_free_mail: &policy.resolve.extra_free_mail,
                    recent_to_recipient: facts.recent_acks_to_recipient,
                    recent_to_domain: facts.recent_acks_to_domain,
                    random: arrival.random,
                },
                &policy.ack,
            );
            let new = NewTicket { number, seq: facts.next_seq_today, respond_by };
            base(Route::New, referred, Some(new), None, ack)
        }
    }
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
        let arrival = Arrival { mailbox_address: "support@helpdesk.example", authentication, random: [1; 16], now };
        decide(&inbound, sender, facts, &policy(), &arrival)
    }

    fn run(raw: &str, facts: &Facts) -> Decision {
        run_with(raw, facts, Authentication::Unknown)
    }

    fn acme() -> OrgFact {
        OrgFact { id: 1, name: "ACME".to_owned(), first_response_hours: None }
    }

    fn candidate(trust: TicketTrust) -> Option<Candidate> {
        Some(Candidate { ticket: KnownTicket { id: 4, number: "N4".to_owned(), state: State::Open }, trust })
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
        let ticket = d.new_ticket.expect("a new ticket");
        assert_eq!(ticket.number, ticket_number::format(chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(), 17));
        assert_eq!(ticket.respond_by.unwrap().to_rfc3339(), "2026-11-23T13:30:00+00:00");
        assert_eq!(d.customer.organisation_name(), Some("ACME"));
        assert!(matches!(d.ack, AckDecision::Queue(_)));
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
            assert_eq!(d.follow_up_state, want, "{state:?}");
            assert_eq!(d.new_ticket, None);
            assert_eq!(d.ack.summary(), "follow-up");
        }
    }

    #[test]
    fn automated_mail_makes_a_ticket_without_an_ack() {
        let d = run("From: a@acme.com\r\nAuto-Submitted: auto-replied\r\n\r\nx", &Facts::default());
        assert!(d.new_ticket.is_some());
        assert_eq!(d.classification, vec![Kind::AutoReply]);
        assert_eq!(d.ack.summary(), "auto-reply");
    }

    #[test]
    fn a_sender_without_an_address_still_makes_a_ticket() {
        let d = run("From: Mail Delivery Subsystem <MAILER-DAEMON>\r\nSubject: failure\r\n\r\nx", &Facts::default());
        assert!(d.new_ticket.is_some());
        assert_eq!(d.customer, Customer::None { reason: "no usable sender address" });
        assert_eq!(d.ack.summary(), "bounce");
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
            assert_eq!(matches!(d.route, Route::FollowUp { .. }), follow_up, "case {i}: {d:?}");
            assert_eq!(d.referred.as_ref().map(|r| r.refusal), refusal, "case {i}");
            if let Some(r) = &d.referred {
                assert_eq!((r.ticket.as_str(), r.via), ("N4", Via::Tag));
                assert!(d.new_ticket.is_some());
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
        assert_eq!(d.ack.summary(), "failed DMARC");
        assert_eq!(d.customer, Customer::None { reason: "failed DMARC" });
        assert_eq!(d.authentication, Authentication::Fail);
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
        };
        let d = decide(&inbound, sender, &Facts::default(), &policy, &arrival);
        assert!(!d.classification.contains(&Kind::NoReply), "{:?}", d.classification);
        assert_eq!(d.ack.summary(), "queued");
        // Read from From, the same form mail is the no-reply sender's: not acknowledged.
        assert_eq!(run(raw, &Facts::default()).ack.summary(), "no-reply");
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
        for (raw, ack) in cases {
            let d = run(raw, &Facts { sender: known(), ..Facts::default() });
            assert_eq!(d.customer, Customer::None { reason: "automated sender" }, "{raw}");
            assert_eq!(d.ack.summary(), ack, "{raw}");
        }
        let person = run("From: a@acme.com\r\n\r\nx", &Facts { sender: known(), ..Facts::default() });
        assert!(matches!(person.customer, Customer::Existing(_)));
    }

    #[test]
    fn a_bounce_of_our_acknowledgement_goes_to_its_ticket() {
        let raw = "From: MAILER-DAEMON@mx.acme.com\r\nReturn-Path: <>\r\nSubject: Undelivered\r\n\r\n\
                   Final-Recipient: rfc822; x@acme.com\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1\r\n \
                   user unknown\r\n";
        let quoted =
            OurAck { outbox_id: 8, ticket: KnownTicket { id: 4, number: "N4".to_owned(), state: State::Closed } };
        let d = run(raw, &Facts { quoted_ack: Some(quoted), ..Facts::default() });
        let Route::AckBounce { ticket, outbox_id, diagnostic } = &d.route else { panic!("{d:?}") };
        assert_eq!((ticket.id, *outbox_id), (4, 8));
        assert_eq!(diagnostic, "Status: 5.1.1; Diagnostic-Code: smtp; 550 5.1.1 user unknown");
        assert_eq!((d.new_ticket.is_none(), d.follow_up_state), (true, None));
        // Not a bounce: a customer forwarding our acknowledgement is mail like any other.
        let quoted =
            OurAck { outbox_id: 8, ticket: KnownTicket { id: 4, number: "N4".to_owned(), state: State::Open } };
        let d = run("From: a@acme.com\r\n\r\nfwd", &Facts { quoted_ack: Some(quoted), ..Facts::default() });
        assert_eq!(d.route, Route::New);
    }

    #[test]
    fn an_inbound_message_cannot_claim_our_message_id() {
        let d = run(
            "From: a@acme.com\r\nMessage-ID: <ack.2026112310000021.x@helpdesk.example>\r\n\r\nx",
            &Facts::default(),
        );
        assert!(d.claims_our_message_id && !d.records_message_id());
        let d = run("From: a@acme.com\r\nMessage-ID: <m1@acme.com>\r\n\r\nx", &Facts::default());
        assert!(d.records_message_id());
        // One of ours come back claims nothing.
        let ours = "From: support@helpdesk.example\r\nMessage-ID: <ack.2026112310000021.x@helpdesk.example>\r\n\r\nx";
        assert!(!run(ours, &Facts { own_message: true, ..Facts::default() }).claims_our_message_id);
    }
}
