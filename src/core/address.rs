//! Email addresses and domains: normalisation (lower-case, IDNA), registrable domains
//! (public suffix list) and the free-mail list. Pure; owns no state.

/// Lower-cases an address and converts its domain to ASCII (IDNA), so that every
/// spelling of one mailbox compares equal. `None` when it is not a usable address.
///
/// Only case and the IDNA encoding of the domain may change: a character that Unicode
/// folds onto another (fullwidth `ｃ`, circled `ⓒ`, the Kelvin sign, the ideographic full
/// stop) makes the address unusable rather than someone else's. The result is also an
/// address the SMTP side (lettre) accepts, so nothing is queued that cannot be sent.
pub fn normalise(address: &str) -> Option<String> {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    let (local, domain) = address.rsplit_once('@')?;
    let bad = |c: char| c.is_whitespace() || c.is_control() || "<>()[],;:\\\"@".contains(c);
    if local.is_empty() || local.len() > 64 || local.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let ascii = idna::domain_to_ascii(domain).ok()?;
    if ascii.is_empty() || ascii.len() > 253 || ascii.chars().any(bad) || !ascii.contains('.') {
        return None;
    }
    // IDNA may only have lower-cased and encoded the domain, never mapped a character.
    let (unicode, errors) = idna::domain_to_unicode(&ascii);
    let written = lower_case(domain)?;
    let (written, ascii_labels, unicode_labels) = (written.split('.'), ascii.split('.'), unicode.split('.'));
    if errors.is_err() || written.clone().count() != ascii_labels.clone().count() {
        return None;
    }
    let same = written.zip(ascii_labels.zip(unicode_labels)).all(|(w, (a, u))| w == a || w == u);
    if !same {
        return None;
    }
    // RFC 5321 domains are host names: letters, digits and inner hyphens.
    let host_name = ascii.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if !host_name {
        return None;
    }
    let normalised = format!("{}@{}", lower_case(local)?, ascii);
    normalised.parse::<lettre::Address>().is_ok().then_some(normalised)
}

/// Lower case, or `None` when a non-ASCII character would become ASCII (the Kelvin sign
/// `K` → `k`, `İ` → `i̇`): that is a look-alike of another address, not its spelling.
fn lower_case(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else {
            let before = out.len();
            out.extend(c.to_lowercase());
            if out[before..].chars().any(|l| l.is_ascii()) {
                return None;
            }
        }
    }
    Some(out)
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

/// Free-mail and consumer ISP domains (several thousand, from a maintained public list
/// vendored under its MIT licence; `scripts/refresh-freemail` updates it).
const FREE_MAIL_LIST: &str = include_str!("freemail.txt");

static FREE_MAIL: std::sync::LazyLock<std::collections::HashSet<&'static str>> = std::sync::LazyLock::new(|| {
    FREE_MAIL_LIST.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
});

/// Consumer mail providers that register one name under many suffixes (`yahoo.co.uk`,
/// `gmx.net`, `hotmail.fr`): matched on the first label of the registrable domain.
const FREE_MAIL_FAMILIES: &[&str] = &["hotmail", "yahoo", "ymail", "gmx", "yandex", "outlook", "live"];

/// Whether a domain belongs to a consumer mail provider, built in or configured.
/// The domain and its parents down to the registrable domain are looked up (`mx.gmail.com`
/// is Gmail), never a public suffix above it.
pub fn is_free_mail(domain: &str, extra: &[String]) -> bool {
    let registrable = registrable_domain(domain).unwrap_or_else(|| domain.to_owned());
    let first_label = registrable.split('.').next().unwrap_or("");
    let mut candidates = vec![domain];
    let mut rest = domain;
    while let Some((_, parent)) = rest.split_once('.').filter(|_| rest.len() > registrable.len()) {
        candidates.push(parent);
        rest = parent;
    }
    candidates.iter().any(|d| FREE_MAIL.contains(d))
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
            ("J\u{f6}rg@B\u{fc}CHER.de", Some("j\u{f6}rg@xn--bcher-kva.de")),
            ("ceo@xn--bcher-kva.de", Some("ceo@xn--bcher-kva.de")),
            // Look-alikes that Unicode normalisation folds onto ceo@acme-widgets.com.
            ("\u{ff43}\u{ff45}\u{ff4f}@\u{ff41}\u{ff43}\u{ff4d}\u{ff45}-widgets.com", None),
            ("ceo@\u{ff41}\u{ff43}\u{ff4d}\u{ff45}-widgets.com", None),
            ("ceo@acme-widgets\u{3002}com", None),
            ("ceo@acme-widgets\u{ff0e}com", None),
            ("ceo@\u{24d0}cme-widgets.com", None),
            ("\u{24d2}eo@acme-widgets.com", Some("\u{24d2}eo@acme-widgets.com")),
            ("\u{212a}elvin@acme-widgets.com", None),
            ("kelvin@acme-widgets.\u{212a}", None),
            ("\u{130}nci@acme-widgets.com", None),
            ("ceo@acme-widge\u{200b}ts.com", None),
            // Addresses lettre (the SMTP side) refuses.
            ("ad)min@acme-widgets.com", None),
            ("admin=@acme-widgets.com", Some("admin=@acme-widgets.com")),
            ("admin@acme`widgets.com", None),
            ("admin@acme-widgets.com=", None),
            ("a..b@acme-widgets.com", None),
            ("\"a b\"@acme-widgets.com", None),
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
        // Big ISPs and consumer providers the first built-in list missed.
        for d in
            ["comcast.net", "att.net", "btinternet.com", "wanadoo.fr", "docomo.ne.jp", "hanmail.net", "protonmail.ch"]
        {
            assert!(is_free_mail(d, &[]), "{d} is free mail");
        }
        for d in ["acme.com", "globex.co.uk", "livestock.com", "co.uk", "ne.jp", "github.com", "example.co.jp"] {
            assert!(!is_free_mail(d, &extra), "{d} is not free mail");
        }
    }

    #[test]
    fn the_free_mail_list_is_large_sorted_and_normalised() {
        let domains: Vec<&str> = FREE_MAIL_LIST.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(domains.len() > 5_000, "{}", domains.len());
        assert!(domains.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
        for d in domains {
            assert_eq!(normalise_domain(d).as_deref(), Some(d), "{d} is a normalised domain");
        }
    }

    #[test]
    fn within() {
        assert!(is_within("eu.acme.com", "acme.com"));
        assert!(is_within("acme.com", "acme.com"));
        assert!(!is_within("notacme.com", "acme.com"));
    }
}
