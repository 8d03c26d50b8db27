//! What the service layer refuses, as data a caller words for its own audience: the CLI
//! adds what to type next, a web handler picks a status code and a form message. The
//! sentences here name the records involved and never a command-line option.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    /// A record named in the command does not exist (or not in the relation named).
    #[error("{0}")]
    NotFound(Missing),
    /// An address belongs to one customer only; `owner` is that customer's primary address.
    #[error("{address} already belongs to customer {owner}")]
    AddressTaken { address: String, owner: String },
    #[error("cannot remove {address}: it is the only address of its customer")]
    LastAddress { address: String },
    #[error("organisation {organisation:?} is already the primary organisation of {customer}")]
    AlreadyPrimary { customer: String, organisation: String },
    /// Another organisation has this name, in any case.
    #[error("organisation {name:?} already exists")]
    NameTaken { name: String },
    #[error(
        "{domain} is a free-mail domain: its addresses belong to unrelated people, who must not share an \
         organisation"
    )]
    FreeMailDomain { domain: String },
    #[error("{domain} already belongs to organisation {owner:?}")]
    DomainOwned { domain: String, owner: String },
    /// A merge of a record into itself.
    #[error("{0}")]
    SameEntity(Same),
    /// An edit that asks for no change at all.
    #[error("nothing to change")]
    NothingToChange,
    /// Signing in failed; which of address and password was wrong is not said.
    #[error("wrong e-mail or password")]
    BadCredentials,
    #[error("a password needs at least {min} characters")]
    WeakPassword { min: usize },
    #[error("{0} is already an agent")]
    AgentTaken(String),
    /// An agent's name is shown on replies and tickets: it cannot be blank.
    #[error("an agent needs a name")]
    AgentUnnamed,
    /// A portal sign-in or confirmation link that is unknown, used or expired.
    #[error("this link has expired or was already used: ask for a new one")]
    LinkInvalid,
    /// A customer user may close only a ticket of their own, not one of a colleague's.
    #[error("ticket {0} is not yours to close")]
    NotYourTicket(String),
    /// A message written in the portal that cannot be made (empty, no subject, …).
    #[error(transparent)]
    Written(#[from] crate::core::portal::WrittenError),
    /// A reply that cannot be written (empty, or nobody to send it to).
    #[error(transparent)]
    Reply(#[from] crate::core::reply::ReplyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a command named that is not there, as it was named.
#[derive(Debug, thiserror::Error)]
pub enum Missing {
    #[error("no customer {0}")]
    Customer(String),
    #[error("no agent {0}")]
    Agent(String),
    #[error("no organisation {0:?}")]
    Organisation(String),
    #[error("no ticket {0}")]
    Ticket(String),
    #[error("ticket {number} has no article {article} with the bytes it arrived with")]
    RawArticle { number: String, article: u32 },
    #[error("ticket {0} has no attachments (or does not exist)")]
    Attachments(String),
    #[error("ticket {number} has no attachment {name:?}")]
    Attachment { number: String, name: String },
    #[error("no failed message {0}")]
    FailedMessage(i64),
    #[error("no unsent acknowledgement with id {0}")]
    UnsentAck(i64),
    #[error("{address} is not an address of customer {customer}")]
    AddressOf { address: String, customer: String },
    #[error("{customer} is not linked to organisation {organisation:?}")]
    Link { customer: String, organisation: String },
    #[error("{domain} is not a domain of organisation {organisation:?}")]
    DomainOf { domain: String, organisation: String },
}

/// The two names of one record that a merge was asked to join.
#[derive(Debug, thiserror::Error)]
pub enum Same {
    #[error("{from} and {into} are already the same customer")]
    Customer { from: String, into: String },
    #[error("cannot merge organisation {0:?} into itself")]
    Organisation(String),
}

impl From<Missing> for DeskError {
    fn from(missing: Missing) -> Self {
        DeskError::NotFound(missing)
    }
}
