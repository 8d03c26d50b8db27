//! The decision for one message: classification, route, customer and acknowledgement,
//! from the parsed message, the facts the store gathered, the policy and the time.
//! Pure: everything it needs comes in as arguments, so it is tested table-driven.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::ack::{self, AckDecision, AckInput, AckPolicy};
use super::classify::{self, Kind};
use super::parse::Inbound;
use super::resolve::{self, Customer, ResolvePolicy, Sender, SenderFacts};
use super::route::{self, Route, RouteFacts, State};
use super::ticket_number;

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
    pub max_message_bytes: usize,
}

/// What the store knows that the decision depends on.
#[derive(Debug, Default)]
pub struct Facts {
    pub route: RouteFacts,
    pub sender: SenderFacts,
    pub recent_acks_to_recipient: u32,
    /// The sequence number the next ticket of today gets (1-based).
    pub next_seq_today: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewTicket {
    pub number: String,
    pub seq: u32,
    pub respond_by: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub classification: Vec<Kind>,
    /// `None` when no header holds a usable address (e.g. a bare `MAILER-DAEMON`).
    pub sender: Option<Sender>,
    pub customer: Customer,
    pub route: Route,
    /// Set for a new ticket.
    pub new_ticket: Option<NewTicket>,
    /// The state a follow-up moves its ticket to, if it changes.
    pub follow_up_state: Option<State>,
    pub ack: AckDecision,
}

/// `mailbox_address` is the helpdesk address the message arrived at (normalised).
pub fn decide(
    inbound: &Inbound,
    sender: Option<Sender>,
    facts: &Facts,
    policy: &Policy,
    mailbox_address: &str,
    now: DateTime<Utc>,
) -> Decision {
    let classification = classify::classify(inbound, &policy.own_addresses);
    let customer = match &sender {
        Some(sender) => resolve::resolve(sender, &facts.sender, &policy.resolve),
        None => Customer::None { reason: "no usable sender address" },
    };
    let route = route::route(&facts.route, policy.reopen_closed);
    let (new_ticket, follow_up_state, ack) = match &route {
        Route::New => {
            let number = ticket_number::format(now.date_naive(), facts.next_seq_today);
            let respond_by = customer.first_response_hours().map(|h| now + Duration::hours(h));
            let tag = ticket_number::tag(&policy.tag_prefix, &number);
            let ack = ack::decide(
                &AckInput {
                    inbound,
                    classification: &classification,
                    ticket_number: &number,
                    tag: &tag,
                    helpdesk_address: mailbox_address,
                    organisation: customer.organisation_name(),
                    own_addresses: &policy.own_addresses,
                    internal_domains: &policy.resolve.internal_domains,
                    recent_to_recipient: facts.recent_acks_to_recipient,
                },
                &policy.ack,
            );
            (Some(NewTicket { number, seq: facts.next_seq_today, respond_by }), None, ack)
        }
        Route::FollowUp { ticket, reopen, .. } => {
            let state = match ticket.state {
                State::Closed if *reopen => Some(State::Open),
                State::Pending => Some(State::Open),
                _ => None,
            };
            (None, state, AckDecision::Skip { reason: "follow-up".to_owned() })
        }
    };
    Decision { classification, sender, customer, route, new_ticket, follow_up_state, ack }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::ack::AckTemplate;
    use crate::core::parse::parse;
    use crate::core::resolve::{AddressSource, OrgFact};
    use crate::core::route::KnownTicket;
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
                template: AckTemplate::new("{{ ticket_number }}".to_owned()).unwrap(),
            },
            own_addresses: vec!["support@helpdesk.example".to_owned()],
            tag_prefix: "Ticket#".to_owned(),
            loop_header: "X-Postdesk-Loop".to_owned(),
            reopen_closed: true,
            max_message_bytes: 1 << 20,
        }
    }

    fn run(raw: &str, facts: &Facts) -> Decision {
        let inbound = parse(raw.as_bytes(), "X-Postdesk-Loop").unwrap();
        let sender = resolve::sender(&inbound, AddressSource::From);
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 9, 30, 0).unwrap();
        decide(&inbound, sender, facts, &policy(), "support@helpdesk.example", now)
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
        let known =
            |state| RouteFacts { tagged: None, referenced: Some(KnownTicket { id: 4, number: "N".to_owned(), state }) };
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
}
