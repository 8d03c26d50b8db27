//! Resolve the sender: which address the message is from, and whether that is an
//! existing customer user, one to create (with or without an organisation), or nobody
//! (internal senders). Pure: the store looks up the address and the domain owner.

use serde::Serialize;

use super::address;
use super::parse::{Inbound, Mailbox};

/// Which header names the customer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressSource {
    #[default]
    From,
    /// For web forms that send from a no-reply address on the customer's behalf.
    ReplyTo,
}

#[derive(Debug, Clone)]
pub struct ResolvePolicy {
    pub prefer: AddressSource,
    pub auto_create_customers: bool,
    pub auto_create_organisations: bool,
    pub extra_free_mail: Vec<String>,
    pub internal_domains: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sender {
    /// Normalised.
    pub email: String,
    pub name: Option<String>,
}

/// The customer address of a message: the preferred header, else the other one, else
/// `Sender:`; the first that holds a usable address.
pub fn sender(inbound: &Inbound, prefer: AddressSource) -> Option<Sender> {
    let (first, second) = match prefer {
        AddressSource::From => (&inbound.from, &inbound.reply_to),
        AddressSource::ReplyTo => (&inbound.reply_to, &inbound.from),
    };
    [first, second, &inbound.sender]
        .into_iter()
        .flatten()
        .find_map(|m: &Mailbox| Some(Sender { email: address::normalise(&m.address)?, name: m.name.clone() }))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrgFact {
    pub id: i64,
    pub name: String,
    pub first_response_hours: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerFact {
    pub id: i64,
    pub name: Option<String>,
    pub organisation: Option<OrgFact>,
}

/// What the store knows about a sender address.
#[derive(Debug, Clone, Default)]
pub struct SenderFacts {
    pub customer: Option<CustomerFact>,
    /// The organisation owning the sender's domain or its registrable domain.
    pub domain_owner: Option<OrgFact>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "organisation", rename_all = "kebab-case")]
pub enum Organisation {
    None { reason: &'static str },
    Existing(OrgFact),
    Create { name: String, domain: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "customer", rename_all = "kebab-case")]
pub enum Customer {
    Existing(CustomerFact),
    Create { email: String, name: Option<String>, organisation: Organisation },
    None { reason: &'static str },
}

impl Customer {
    pub fn organisation_name(&self) -> Option<&str> {
        match self {
            Customer::Existing(c) => c.organisation.as_ref().map(|o| o.name.as_str()),
            Customer::Create { organisation: Organisation::Existing(o), .. } => Some(&o.name),
            Customer::Create { organisation: Organisation::Create { name, .. }, .. } => Some(name),
            _ => None,
        }
    }

    pub fn first_response_hours(&self) -> Option<i64> {
        match self {
            Customer::Existing(CustomerFact { organisation: Some(o), .. })
            | Customer::Create { organisation: Organisation::Existing(o), .. } => o.first_response_hours,
            _ => None,
        }
    }
}

/// Mail from these is sent by machines: it never makes a customer user, and it is
/// never acknowledged. Matches the whole local part, or its start before `-`, `_`, `.`
/// or `+` (`no-reply-billing@…`).
pub fn is_automated_sender(email: &str) -> bool {
    const LOCAL_PARTS: [&str; 9] = [
        "mailer-daemon",
        "mail-daemon",
        "postmaster",
        "no-reply",
        "noreply",
        "no_reply",
        "do-not-reply",
        "donotreply",
        "do_not_reply",
    ];
    let local = email.rsplit_once('@').map_or(email, |(l, _)| l).to_ascii_lowercase();
    LOCAL_PARTS
        .iter()
        .any(|p| local.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '_', '.', '+'])))
}

pub fn is_internal(email: &str, policy: &ResolvePolicy) -> bool {
    let domain = address::domain_of(email);
    policy.internal_domains.iter().any(|d| address::is_within(domain, d))
}

pub fn resolve(sender: &Sender, facts: &SenderFacts, policy: &ResolvePolicy) -> Customer {
    if let Some(existing) = &facts.customer {
        return Customer::Existing(existing.clone());
    }
    if is_internal(&sender.email, policy) {
        return Customer::None { reason: "internal sender" };
    }
    if !policy.auto_create_customers {
        return Customer::None { reason: "auto-creation of customers is off" };
    }
    Customer::Create {
        email: sender.email.clone(),
        name: sender.name.clone(),
        organisation: organisation(&sender.email, facts, policy),
    }
}

fn organisation(email: &str, facts: &SenderFacts, policy: &ResolvePolicy) -> Organisation {
    let domain = address::domain_of(email);
    if address::is_free_mail(domain, &policy.extra_free_mail) {
        return Organisation::None { reason: "free-mail domain" };
    }
    if let Some(owner) = &facts.domain_owner {
        return Organisation::Existing(owner.clone());
    }
    match (policy.auto_create_organisations, address::registrable_domain(domain)) {
        (true, Some(registrable)) => Organisation::Create { name: registrable.clone(), domain: registrable },
        (true, None) => Organisation::None { reason: "no registrable domain" },
        (false, _) => Organisation::None { reason: "auto-creation of organisations is off" },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ResolvePolicy {
        ResolvePolicy {
            prefer: AddressSource::From,
            auto_create_customers: true,
            auto_create_organisations: true,
            extra_free_mail: vec!["freemail.example".to_owned()],
            internal_domains: vec!["helpdesk.example".to_owned()],
        }
    }

    fn org(id: i64, name: &str) -> OrgFact {
        OrgFact { id, name: name.to_owned(), first_response_hours: None }
    }

    fn sender_of(email: &str) -> Sender {
        Sender { email: email.to_owned(), name: None }
    }

    #[test]
    fn table() {
        let acme = || SenderFacts { customer: None, domain_owner: Some(org(7, "ACME")) };
        let known = || SenderFacts {
            customer: Some(CustomerFact { id: 3, name: None, organisation: None }),
            domain_owner: None,
        };
        let create = |email: &str, organisation| Customer::Create { email: email.to_owned(), name: None, organisation };
        let new_org = |d: &str| Organisation::Create { name: d.to_owned(), domain: d.to_owned() };
        let cases: Vec<(&str, SenderFacts, ResolvePolicy, Customer)> = vec![
            (
                "a@acme.com",
                known(),
                policy(),
                Customer::Existing(CustomerFact { id: 3, name: None, organisation: None }),
            ),
            ("a@acme.com", acme(), policy(), create("a@acme.com", Organisation::Existing(org(7, "ACME")))),
            (
                "a@mail.eu.acme.co.uk",
                SenderFacts::default(),
                policy(),
                create("a@mail.eu.acme.co.uk", new_org("acme.co.uk")),
            ),
            ("a@gmail.com", acme(), policy(), create("a@gmail.com", Organisation::None { reason: "free-mail domain" })),
            (
                "a@freemail.example",
                SenderFacts::default(),
                policy(),
                create("a@freemail.example", Organisation::None { reason: "free-mail domain" }),
            ),
            ("agent@helpdesk.example", SenderFacts::default(), policy(), Customer::None { reason: "internal sender" }),
            (
                "agent@it.helpdesk.example",
                SenderFacts::default(),
                policy(),
                Customer::None { reason: "internal sender" },
            ),
            (
                "a@acme.com",
                SenderFacts::default(),
                ResolvePolicy { auto_create_customers: false, ..policy() },
                Customer::None { reason: "auto-creation of customers is off" },
            ),
            (
                "a@acme.com",
                SenderFacts::default(),
                ResolvePolicy { auto_create_organisations: false, ..policy() },
                create("a@acme.com", Organisation::None { reason: "auto-creation of organisations is off" }),
            ),
        ];
        for (email, facts, policy, want) in cases {
            assert_eq!(resolve(&sender_of(email), &facts, &policy), want, "{email}");
        }
    }

    #[test]
    fn automated_senders() {
        let cases = [
            ("mailer-daemon@mx.acme.com", true),
            ("MAILER-DAEMON", true),
            ("postmaster@acme.com", true),
            ("no-reply@forms.acme.com", true),
            ("noreply@github.example", true),
            ("no_reply@x.example", true),
            ("do-not-reply@bank.example", true),
            ("donotreply@bank.example", true),
            ("no-reply-billing@shop.example", true),
            ("noreply+bounce@shop.example", true),
            ("alice@acme.com", false),
            ("noreplyneeded@acme.com", false),
            ("postmasters-guild@acme.com", false),
            ("nora@acme.com", false),
        ];
        for (email, want) in cases {
            assert_eq!(is_automated_sender(email), want, "{email}");
        }
    }

    #[test]
    fn sender_prefers_the_configured_header() {
        let raw = "From: Website <no-reply@forms.acme.com>\r\nReply-To: Judy <Judy@Umbrella.com>\r\n\r\nx";
        let inbound = crate::core::parse::parse(raw.as_bytes(), "X-Loop").unwrap();
        assert_eq!(sender(&inbound, AddressSource::From).unwrap().email, "no-reply@forms.acme.com");
        let judy = sender(&inbound, AddressSource::ReplyTo).unwrap();
        assert_eq!((judy.email.as_str(), judy.name.as_deref()), ("judy@umbrella.com", Some("Judy")));

        let raw = "From: MAILER-DAEMON\r\nSender: Real <real@acme.com>\r\n\r\nx";
        let inbound = crate::core::parse::parse(raw.as_bytes(), "X-Loop").unwrap();
        assert_eq!(sender(&inbound, AddressSource::From).unwrap().email, "real@acme.com");
    }
}
