//! Email addresses and domains: normalisation (lower-case, IDNA), registrable domains
//! (public suffix list) and the free-mail list. Pure; owns no state.

/// Lower-cases an address and converts its domain to ASCII (IDNA), so that every
/// spelling of one mailbox compares equal. `None` when it is not a usable address.
pub fn normalise(address: &str) -> Option<String> {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    let (local, domain) = address.rsplit_once('@')?;
    let bad = |c: char| c.is_whitespace() || c.is_control() || "<>()[],;:\\\"@".contains(c);
    if local.is_empty() || local.len() > 64 || local.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let domain = idna::domain_to_ascii(domain.trim_end_matches('.')).ok()?;
    if domain.is_empty() || domain.len() > 253 || domain.chars().any(bad) || !domain.contains('.') {
        return None;
    }
    Some(format!("{}@{}", local.to_lowercase(), domain))
}

/// A domain name normalised as the domain of an address is (lower-case, IDNA), so
/// configured and typed domains compare equal to the domains of stored addresses.
pub fn normalise_domain(domain: &str) -> Option<String> {
    if domain.contains('@') {
        return None;
    }
    normalise(&format!("x@{}", domain.trim())).map(|a| domain_of(&a).to_owned())
}

/// The domain part of a normalised address.
pub fn domain_of(normalised: &str) -> &str {
    normalised.rsplit_once('@').map_or("", |(_, d)| d)
}

/// The registrable domain ("organisation domain") of a host name by the public
/// suffix list: `mail.eu.acme.co.uk` → `acme.co.uk`.
pub fn registrable_domain(domain: &str) -> Option<String> {
    psl::domain_str(domain).map(str::to_owned)
}

/// The domains an organisation may own for an address at `domain`, most specific
/// first: the domain itself and its registrable domain (`eu.acme.com`, `acme.com`).
pub fn owner_domains(domain: &str) -> Vec<String> {
    let mut domains = vec![domain.to_owned()];
    domains.extend(registrable_domain(domain).filter(|r| r != domain));
    domains
}

/// Consumer mail providers: exact registrable domains.
const FREE_MAIL: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "live.com",
    "msn.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "web.de",
    "mail.ru",
    "inbox.ru",
    "list.ru",
    "bk.ru",
    "proton.me",
    "protonmail.com",
    "pm.me",
    "qq.com",
    "163.com",
    "126.com",
    "yeah.net",
    "sina.com",
    "naver.com",
    "daum.net",
    "zoho.com",
    "tutanota.com",
    "tuta.io",
    "fastmail.com",
    "mail.com",
    "t-online.de",
    "freenet.de",
    "orange.fr",
    "free.fr",
    "laposte.net",
    "libero.it",
    "seznam.cz",
    "wp.pl",
    "o2.pl",
    "interia.pl",
    "rambler.ru",
    "hushmail.com",
    "rediffmail.com",
];

/// Consumer mail providers that register one name under many suffixes (`yahoo.co.uk`,
/// `gmx.net`, `hotmail.fr`): matched on the first label of the registrable domain.
const FREE_MAIL_FAMILIES: &[&str] = &["hotmail", "yahoo", "ymail", "gmx", "yandex", "outlook", "live"];

/// Whether a domain belongs to a consumer mail provider, built in or configured.
pub fn is_free_mail(domain: &str, extra: &[String]) -> bool {
    let registrable = registrable_domain(domain).unwrap_or_else(|| domain.to_owned());
    let first_label = registrable.split('.').next().unwrap_or("");
    FREE_MAIL.contains(&registrable.as_str())
        || FREE_MAIL_FAMILIES.contains(&first_label)
        || extra.iter().any(|d| d == domain || *d == registrable)
}

/// Whether `domain` is `parent` or one of its subdomains.
pub fn is_within(domain: &str, parent: &str) -> bool {
    domain == parent || domain.strip_suffix(parent).is_some_and(|rest| rest.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_cases() {
        let cases = [
            ("Alice@Example.COM", Some("alice@example.com")),
            ("<bob@example.com>", Some("bob@example.com")),
            (" carol@b\u{fc}cher.de ", Some("carol@xn--bcher-kva.de")),
            ("dave@example.com.", Some("dave@example.com")),
            ("MAILER-DAEMON", None),
            ("@example.com", None),
            ("eve@", None),
            ("eve@localhost", None),
            ("a b@example.com", None),
            ("x@exa mple.com", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalise(input).as_deref(), want, "normalise({input:?})");
        }
    }

    #[test]
    fn normalise_domain_cases() {
        let cases = [
            ("Acme.COM", Some("acme.com")),
            (" b\u{fc}cher.de ", Some("xn--bcher-kva.de")),
            ("localhost", None),
            ("acme .com", None),
            ("a@b.com", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalise_domain(input).as_deref(), want, "{input:?}");
        }
    }

    #[test]
    fn owner_domains_cases() {
        assert_eq!(owner_domains("eu.acme.co.uk"), ["eu.acme.co.uk", "acme.co.uk"]);
        assert_eq!(owner_domains("acme.com"), ["acme.com"]);
    }

    #[test]
    fn registrable_domains() {
        let cases = [
            ("mail.eu.acme.co.uk", "acme.co.uk"),
            ("acme.com", "acme.com"),
            ("a.b.c.example.org", "example.org"),
            ("helpdesk.example", "helpdesk.example"),
        ];
        for (input, want) in cases {
            assert_eq!(registrable_domain(input).as_deref(), Some(want), "{input}");
        }
    }

    #[test]
    fn free_mail() {
        let extra = vec!["mycorp-mail.net".to_owned()];
        for d in ["gmail.com", "yahoo.co.uk", "hotmail.fr", "gmx.net", "web.de", "mycorp-mail.net", "mx.gmail.com"] {
            assert!(is_free_mail(d, &extra), "{d} is free mail");
        }
        for d in ["acme.com", "globex.co.uk", "livestock.com"] {
            assert!(!is_free_mail(d, &extra), "{d} is not free mail");
        }
    }

    #[test]
    fn within() {
        assert!(is_within("eu.acme.com", "acme.com"));
        assert!(is_within("acme.com", "acme.com"));
        assert!(!is_within("notacme.com", "acme.com"));
    }
}
