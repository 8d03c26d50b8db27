//! The rules of managing customers and organisations, as pure checks: who may take an
//! address, a domain or a name, which address may go, which organisation may be linked.
//! The service layer (`desk`) reads the facts from the store and names the refusal;
//! nothing in here reads the store or the clock.

use super::address;

/// What an organisation's customer users see in the portal: the tickets of the whole
/// organisation (the default), or only their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortalVisibility {
    Own,
    #[default]
    Organisation,
}

impl PortalVisibility {
    pub fn as_str(self) -> &'static str {
        match self {
            PortalVisibility::Own => "own",
            PortalVisibility::Organisation => "organisation",
        }
    }

    pub fn parse(text: &str) -> Option<PortalVisibility> {
        [PortalVisibility::Own, PortalVisibility::Organisation].into_iter().find(|v| v.as_str() == text)
    }
}

/// Whether something that belongs to at most one holder (an address, a domain, an
/// organisation's name) may go to the one who asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim<H> {
    /// Nobody holds it.
    Free,
    /// The one asking holds it already: nothing to do.
    Held,
    /// Another holds it: refused, naming them.
    HeldBy(H),
}

impl<H> Claim<H> {
    /// `holder` holds it now; `is_claimant` tells whether that is the one asking.
    pub fn of(holder: Option<H>, is_claimant: impl FnOnce(&H) -> bool) -> Claim<H> {
        match holder {
            None => Claim::Free,
            Some(h) if is_claimant(&h) => Claim::Held,
            Some(h) => Claim::HeldBy(h),
        }
    }
}

/// An organisation may own a free-mail domain only when the admin insists: its addresses
/// belong to unrelated people, who must not share an organisation.
pub fn may_own_domain(domain: &str, force: bool, extra_free_mail: &[String]) -> bool {
    force || !address::is_free_mail(domain, extra_free_mail)
}

/// Why an address cannot be removed from a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAddress {
    /// It is not one of theirs.
    NotTheirs,
    /// It is their only one: every customer keeps an address.
    LastAddress,
}

/// Whether `customer`, who has `addresses` addresses, may lose one held by `holder`.
pub fn may_remove_address<Id: PartialEq>(holder: Option<Id>, customer: Id, addresses: u32) -> Result<(), KeepAddress> {
    match holder {
        Some(h) if h == customer && addresses > 1 => Ok(()),
        Some(h) if h == customer => Err(KeepAddress::LastAddress),
        _ => Err(KeepAddress::NotTheirs),
    }
}

/// A customer is linked to organisations beside their primary one, never to it.
pub fn may_link<Id: PartialEq>(primary: Option<Id>, organisation: Id) -> bool {
    primary != Some(organisation)
}

/// Two records may be merged only when they are two.
pub fn may_merge<Id: PartialEq>(from: Id, into: Id) -> bool {
    from != into
}

/// A display name as stored: trimmed; an empty one is none.
pub fn clean_name(name: &str) -> Option<&str> {
    Some(name.trim()).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims() {
        let cases = [
            (None, None, Claim::Free),
            (None, Some(1), Claim::Free),
            (Some(1), Some(1), Claim::Held),
            (Some(2), Some(1), Claim::HeldBy(2)),
            (Some(2), None, Claim::HeldBy(2)),
        ];
        for (holder, claimant, want) in cases {
            assert_eq!(Claim::of(holder, |h| Some(*h) == claimant), want, "{holder:?} {claimant:?}");
        }
    }

    #[test]
    fn free_mail_domains_only_by_force() {
        let extra = ["mail.example".to_owned()];
        let cases = [
            ("acme.example", false, true),
            ("gmail.com", false, false),
            ("gmail.com", true, true),
            ("yahoo.co.uk", false, false),
            ("mail.example", false, false),
            ("mail.example", true, true),
        ];
        for (domain, force, want) in cases {
            assert_eq!(may_own_domain(domain, force, &extra), want, "{domain} force={force}");
        }
    }

    #[test]
    fn address_removal() {
        let cases = [
            (Some(1), 1, 2, Ok(())),
            (Some(1), 1, 1, Err(KeepAddress::LastAddress)),
            (Some(2), 1, 2, Err(KeepAddress::NotTheirs)),
            (None, 1, 2, Err(KeepAddress::NotTheirs)),
        ];
        for (holder, customer, count, want) in cases {
            assert_eq!(may_remove_address(holder, customer, count), want, "{holder:?} {customer} {count}");
        }
    }

    #[test]
    fn links_merges_and_names() {
        assert!(may_link(None, 1) && may_link(Some(2), 1) && !may_link(Some(1), 1));
        assert!(may_merge(1, 2) && !may_merge(1, 1));
        assert_eq!(clean_name(" Zoe Day "), Some("Zoe Day"));
        assert_eq!(clean_name("  "), None);
        assert_eq!(clean_name(""), None);
    }
}
