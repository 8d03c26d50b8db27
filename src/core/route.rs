//! Route: a new ticket, or a follow-up to a known one. Pure: the store looks up the
//! tagged ticket and the referenced message-ids and what it knows about the sender on
//! each; this decides, with `trust`, whether the sender may write into it.

use serde::Serialize;

use super::trust::{self, Authentication, FollowUpFrom, Refusal, SenderTrust, TicketTrust};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    New,
    Open,
    Pending,
    Closed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::New => "new",
            State::Open => "open",
            State::Pending => "pending",
            State::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        [State::New, State::Open, State::Pending, State::Closed].into_iter().find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KnownTicket {
    pub id: i64,
    pub number: String,
    pub state: State,
}

/// A ticket a message points at, and what the store knows about the sender on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub ticket: KnownTicket,
    pub trust: TicketTrust,
}

/// What the store knows about the tickets a message points at.
#[derive(Debug, Clone, Default)]
pub struct RouteFacts {
    /// The ticket whose tag is in the subject, if it exists.
    pub tagged: Option<Candidate>,
    /// The ticket of a message named in `In-Reply-To` or `References`, if any.
    pub referenced: Option<Candidate>,
    /// The organisations the sender's customer user is linked to beside the primary one.
    pub sender_linked_organisations: Vec<i64>,
}

/// A message that pointed at a ticket its sender may not write into: it opens a new
/// ticket that records the one it referred to, and nothing of it reaches that ticket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Referral {
    /// The number of the ticket it pointed at.
    pub ticket: String,
    pub via: Via,
    pub refusal: Refusal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Tag,
    Reference,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "route", rename_all = "kebab-case")]
pub enum Route {
    New,
    FollowUp { ticket: KnownTicket, via: Via, reopen: bool },
}

/// Who may write into a ticket, and how a message's sender stands.
#[derive(Debug, Clone)]
pub struct Gate<'a> {
    pub rule: FollowUpFrom,
    pub sender: &'a SenderTrust,
    pub authentication: Authentication,
}

/// The subject tag wins over references: a customer who forwards an old thread into a
/// new one quotes the ticket they mean. A ticket the sender may not write into is passed
/// over for the other one; when neither admits the sender, the message is a new ticket
/// that refers to the first.
pub fn route(facts: &RouteFacts, gate: &Gate, reopen_closed: bool) -> (Route, Option<Referral>) {
    let candidates = [(&facts.tagged, Via::Tag), (&facts.referenced, Via::Reference)];
    let mut referral = None;
    for (candidate, via) in candidates {
        let Some(Candidate { ticket, trust: ticket_trust }) = candidate else {
            continue;
        };
        match trust::may_follow_up(ticket_trust, gate.sender, gate.authentication, gate.rule) {
            Ok(()) => {
                let reopen = reopen_closed && ticket.state == State::Closed;
                return (Route::FollowUp { ticket: ticket.clone(), via, reopen }, None);
            }
            Err(refusal) => {
                referral.get_or_insert(Referral { ticket: ticket.number.clone(), via, refusal });
            }
        }
    }
    (Route::New, referral)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: i64, state: State) -> Option<Candidate> {
        let trust = TicketTrust { sender_is_customer: true, ..TicketTrust::default() };
        Some(Candidate { ticket: KnownTicket { id, number: format!("N{id}"), state }, trust })
    }

    fn stranger(id: i64) -> Option<Candidate> {
        Some(Candidate {
            ticket: KnownTicket { id, number: format!("N{id}"), state: State::Open },
            trust: TicketTrust::default(),
        })
    }

    fn gate(sender: &SenderTrust) -> Gate<'_> {
        Gate { rule: FollowUpFrom::Organisation, sender, authentication: Authentication::Unknown }
    }

    #[test]
    fn table() {
        let cases = [
            (None, None, true, None),
            (t(1, State::Open), None, true, Some((1, Via::Tag, false))),
            (None, t(2, State::Open), true, Some((2, Via::Reference, false))),
            (t(1, State::Open), t(2, State::Open), true, Some((1, Via::Tag, false))),
            (t(1, State::Closed), None, true, Some((1, Via::Tag, true))),
            (t(1, State::Closed), None, false, Some((1, Via::Tag, false))),
            (None, t(3, State::Closed), true, Some((3, Via::Reference, true))),
        ];
        let sender = SenderTrust::default();
        for (tagged, referenced, reopen_closed, want) in cases {
            let facts = RouteFacts { tagged, referenced, ..RouteFacts::default() };
            let got = match route(&facts, &gate(&sender), reopen_closed) {
                (Route::New, None) => None,
                (Route::FollowUp { ticket, via, reopen }, None) => Some((ticket.id, via, reopen)),
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got, want, "{facts:?} reopen_closed={reopen_closed}");
        }
    }

    #[test]
    fn a_ticket_the_sender_may_not_write_into_is_passed_over_or_referred_to() {
        let sender = SenderTrust::default();
        let cases = [
            // A stranger's tag is passed over for a reference the sender may follow.
            (stranger(1), t(2, State::Open), Some(2), None),
            (stranger(1), None, None, Some(("N1", Via::Tag))),
            (None, stranger(3), None, Some(("N3", Via::Reference))),
            (stranger(1), stranger(3), None, Some(("N1", Via::Tag))),
        ];
        for (tagged, referenced, want_follow_up, want_referral) in cases {
            let facts = RouteFacts { tagged, referenced, ..RouteFacts::default() };
            let (route, referral) = route(&facts, &gate(&sender), true);
            let follow_up = match route {
                Route::FollowUp { ticket, .. } => Some(ticket.id),
                _ => None,
            };
            assert_eq!(follow_up, want_follow_up, "{facts:?}");
            let referral = referral.map(|r| {
                assert_eq!(r.refusal, Refusal::NotOnTicket);
                (r.ticket, r.via)
            });
            assert_eq!(referral.as_ref().map(|(n, v)| (n.as_str(), *v)), want_referral, "{facts:?}");
        }
    }
}
