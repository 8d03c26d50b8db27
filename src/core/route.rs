//! Route: a new ticket, or a follow-up to a known one. Pure: the store looks up the
//! tagged ticket and the referenced message-ids; this decides.

use serde::Serialize;

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

/// What the store knows about the tickets a message points at.
#[derive(Debug, Clone, Default)]
pub struct RouteFacts {
    /// The ticket whose tag is in the subject, if it exists.
    pub tagged: Option<KnownTicket>,
    /// The ticket of a message named in `In-Reply-To` or `References`, if any.
    pub referenced: Option<KnownTicket>,
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

/// The subject tag wins over references: a customer who forwards an old thread into a
/// new one quotes the ticket they mean.
pub fn route(facts: &RouteFacts, reopen_closed: bool) -> Route {
    let found = match (&facts.tagged, &facts.referenced) {
        (Some(t), _) => Some((t, Via::Tag)),
        (None, Some(t)) => Some((t, Via::Reference)),
        (None, None) => None,
    };
    match found {
        None => Route::New,
        Some((ticket, via)) => {
            Route::FollowUp { ticket: ticket.clone(), via, reopen: reopen_closed && ticket.state == State::Closed }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: i64, state: State) -> Option<KnownTicket> {
        Some(KnownTicket { id, number: format!("N{id}"), state })
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
        for (tagged, referenced, reopen_closed, want) in cases {
            let facts = RouteFacts { tagged, referenced };
            let got = match route(&facts, reopen_closed) {
                Route::New => None,
                Route::FollowUp { ticket, via, reopen } => Some((ticket.id, via, reopen)),
            };
            assert_eq!(got, want, "{facts:?} reopen_closed={reopen_closed}");
        }
    }
}
