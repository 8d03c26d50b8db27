//! `[oauth2.NAME]` sections, and how a mailbox or `[smtp]` signs in (`auth`, `oauth2`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{is_loopback, Context, Field, Problems, RawPassword, Unknown};
use crate::core::oauth::{self, Endpoints, Grant, Mechanism, ProviderKind};
use crate::secret::PasswordSource;

/// The `auth` key as written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum AuthKind {
    #[default]
    Password,
    Xoauth2,
    Oauthbearer,
}

/// How a mailbox or the SMTP server is signed in to.
#[derive(Debug, Clone, PartialEq)]
pub enum Login {
    Password(PasswordSource),
    /// A token of the `[oauth2.NAME]` provider, sent with `mechanism`.
    OAuth {
        mechanism: Mechanism,
        provider: String,
    },
}

impl Login {
    /// Whether this signs in with provider `name`.
    pub fn uses(&self, name: &str) -> bool {
        matches!(self, Login::OAuth { provider, .. } if provider == name)
    }

    /// Where the password is read from; `None` for OAuth2 (its tokens are the store's).
    pub fn password(&self) -> Option<&PasswordSource> {
        match self {
            Login::Password(source) => Some(source),
            Login::OAuth { .. } => None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawProvider {
    provider: Option<Field<ProviderKind>>,
    tenant: Option<Field<String>>,
    client_id: Option<Field<String>>,
    client_secret: Option<Field<String>>,
    client_secret_file: Option<Field<PathBuf>>,
    client_secret_credential: Option<Field<String>>,
    grant: Option<Field<Grant>>,
    authorization_url: Option<Field<String>>,
    token_url: Option<Field<String>>,
    device_authorization_url: Option<Field<String>>,
    scopes: Option<Field<Vec<String>>>,
    ca_file: Option<Field<PathBuf>>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// One `[oauth2.NAME]` section.
#[derive(Debug, Clone)]
pub struct OAuthProvider {
    pub name: String,
    pub client_id: String,
    /// None for a public client (a device sign-in without a secret).
    pub client_secret: Option<PasswordSource>,
    pub grant: Grant,
    pub endpoints: Endpoints,
    /// Certificates to trust for the token endpoint, instead of the system's.
    pub ca_file: Option<PathBuf>,
}

pub(super) fn providers(
    p: &mut Problems,
    raw: BTreeMap<String, RawProvider>,
    cx: &Context,
) -> BTreeMap<String, OAuthProvider> {
    raw.into_iter().filter_map(|(name, r)| provider(p, &name, r, cx).map(|v| (name, v))).collect()
}

fn provider(p: &mut Problems, name: &str, raw: RawProvider, cx: &Context) -> Option<OAuthProvider> {
    let key = |field: &str| format!("oauth2.{name}.{field}");
    let before = p.0.len();
    // The environment's POSTDESK_OAUTH2__NAME__KEY reaches a name in lower case only.
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b)) {
        p.add(&format!("oauth2.{name}"), "a provider's name must be lower-case letters, digits, '-' or '_'");
    }
    p.unknown(&format!("oauth2.{name}"), &raw.unknown);
    let given_kind = raw.provider.is_some();
    let kind = p.get(&key("provider"), raw.provider);
    if !given_kind {
        p.add(&key("provider"), "is required: microsoft, google or generic");
    }
    let kind = kind.unwrap_or(ProviderKind::Generic);
    let client_id = p.required(&key("client_id"), raw.client_id);
    let secret_given =
        raw.client_secret.is_some() || raw.client_secret_file.is_some() || raw.client_secret_credential.is_some();
    let secret = RawPassword {
        password: raw.client_secret,
        password_file: raw.client_secret_file,
        password_credential: raw.client_secret_credential,
    };
    let client_secret = if secret_given { p.password(&key("client_secret"), secret, cx) } else { None };
    let grant = p.or(&key("grant"), raw.grant, Grant::RefreshToken);
    if grant == Grant::ClientCredentials && !secret_given {
        p.add(&key("client_secret"), "grant = \"client_credentials\" signs in with the client secret: give one");
    }
    let tenant = p.get(&key("tenant"), raw.tenant);
    let urls = [
        ("authorization_url", p.get(&key("authorization_url"), raw.authorization_url)),
        ("token_url", p.get(&key("token_url"), raw.token_url)),
        ("device_authorization_url", p.get(&key("device_authorization_url"), raw.device_authorization_url)),
    ];
    let scopes = p.get(&key("scopes"), raw.scopes);
    let endpoints = match kind {
        ProviderKind::Generic => {
            if tenant.is_some() {
                p.add(&key("tenant"), "is for provider = \"microsoft\" only");
            }
            let [(_, authorization_url), (_, token_url), (_, device_authorization_url)] = urls.clone();
            if token_url.is_none() {
                p.add(&key("token_url"), "is required with provider = \"generic\"");
            }
            Endpoints {
                authorization_url,
                token_url: token_url.unwrap_or_default(),
                device_authorization_url,
                scopes: scopes.unwrap_or_default(),
            }
        }
        named => {
            for (field, value) in &urls {
                if value.is_some() {
                    p.add(&key(field), "is for provider = \"generic\" only: the preset fills it in");
                }
            }
            if scopes.is_some() {
                p.add(&key("scopes"), "is for provider = \"generic\" only: the preset fills it in");
            }
            let tenant = match (named, tenant) {
                (ProviderKind::Microsoft, None) => {
                    p.add(
                        &key("tenant"),
                        "is required with provider = \"microsoft\" (e.g. \"contoso.onmicrosoft.com\")",
                    );
                    String::new()
                }
                (ProviderKind::Microsoft, Some(t)) => t,
                (_, Some(_)) => {
                    p.add(&key("tenant"), "is for provider = \"microsoft\" only");
                    String::new()
                }
                (_, None) => String::new(),
            };
            if named == ProviderKind::Google && grant == Grant::ClientCredentials {
                p.add(&key("grant"), "Google offers no client credentials for mail: use \"refresh_token\"");
            }
            oauth::preset(named, &tenant, grant).expect("a named provider has a preset")
        }
    };
    let given = [
        ("authorization_url", endpoints.authorization_url.as_deref()),
        ("token_url", Some(endpoints.token_url.as_str()).filter(|u| !u.is_empty())),
        ("device_authorization_url", endpoints.device_authorization_url.as_deref()),
    ];
    for (field, url) in given {
        if let Some(url) = url {
            check_url(p, &key(field), url);
        }
    }
    let ca_file = p.ca_file(&key("ca_file"), raw.ca_file, &cx.base);
    (p.0.len() == before).then(|| OAuthProvider {
        name: name.to_owned(),
        client_id,
        client_secret,
        grant,
        endpoints,
        ca_file,
    })
}

/// HTTPS, or plain HTTP to a loopback address (a test server), as for IMAP.
fn check_url(p: &mut Problems, key: &str, text: &str) {
    match oauth2::url::Url::parse(text) {
        Ok(url) if url.scheme() == "https" => {}
        Ok(url) if url.scheme() == "http" && url.host_str().is_some_and(is_loopback) => {}
        Ok(_) => p.add(key, format!("{text:?} must be https:// (plain http only to a loopback address)")),
        Err(e) => p.add(key, format!("{text:?} is not a URL: {e}")),
    }
}

/// A mailbox's or `[smtp]`'s `auth` and `oauth2` keys: a password (one of the three
/// ways), or a provider that exists. `prefix` is "mailbox[0]" or "smtp".
pub(super) fn login(
    p: &mut Problems,
    prefix: &str,
    auth: Option<Field<AuthKind>>,
    oauth2: Option<Field<String>>,
    password: RawPassword,
    providers: &BTreeMap<String, OAuthProvider>,
    cx: &Context,
) -> Option<Login> {
    let key = |field: &str| format!("{prefix}.{field}");
    let mechanism = match p.or(&key("auth"), auth, AuthKind::Password) {
        AuthKind::Password => {
            if oauth2.is_some() {
                p.add(&key("oauth2"), "is for auth = \"xoauth2\" or \"oauthbearer\"");
            }
            return p.password(&key("password"), password, cx).map(Login::Password);
        }
        AuthKind::Xoauth2 => Mechanism::Xoauth2,
        AuthKind::Oauthbearer => Mechanism::Oauthbearer,
    };
    if password.is_given() {
        p.add(&key("password"), "is not used with OAuth2 sign-in (auth = \"xoauth2\"/\"oauthbearer\"): remove it");
    }
    let Some(provider) = p.get(&key("oauth2"), oauth2) else {
        p.add(&key("oauth2"), "is required with OAuth2 sign-in: the NAME of an [oauth2.NAME] section");
        return None;
    };
    if !providers.contains_key(&provider) {
        let known: Vec<&str> = providers.keys().map(String::as_str).collect();
        p.add(&key("oauth2"), format!("{provider:?} names no [oauth2.{provider}] section (there are: {known:?})"));
    }
    Some(Login::OAuth { mechanism, provider })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::from_toml;
    use crate::config::Login;
    use crate::core::oauth::{Grant, Mechanism};

    const MAILBOX: &str = "[[mailbox]]\nname = 'support'\naddress = 'support@helpdesk.example'\n\
                           host = 'outlook.office365.com'\nusername = 'support@contoso.example'\n";

    #[test]
    fn a_microsoft_mailbox_signs_in_with_xoauth2() {
        let c = from_toml(&format!(
            "[oauth2.m365]\nprovider = 'microsoft'\ntenant = 'contoso.onmicrosoft.com'\nclient_id = 'abc'\n\
             {MAILBOX}auth = 'xoauth2'\noauth2 = 'm365'\n"
        ))
        .unwrap();
        assert_eq!(c.mailboxes[0].login, Login::OAuth { mechanism: Mechanism::Xoauth2, provider: "m365".to_owned() });
        let m365 = c.oauth_provider("m365").unwrap();
        assert_eq!((m365.grant, m365.client_secret.is_none()), (Grant::RefreshToken, true));
        assert!(m365.endpoints.token_url.starts_with("https://login.microsoftonline.com/contoso.onmicrosoft.com/"));
    }

    #[test]
    fn oauth_problems_name_their_keys() {
        let cases = [
            ("[oauth2.x]\nprovider = 'generic'\nclient_id = 'a'\n", "oauth2.x.token_url", "is required"),
            (
                "[oauth2.x]\nprovider = 'generic'\nclient_id = 'a'\ntoken_url = 'http://idp.example/token'\n",
                "oauth2.x.token_url",
                "must be https://",
            ),
            ("[oauth2.x]\nprovider = 'microsoft'\nclient_id = 'a'\n", "oauth2.x.tenant", "is required"),
            (
                "[oauth2.x]\nprovider = 'google'\nclient_id = 'a'\ntoken_url = 'https://x.example/t'\n",
                "oauth2.x.token_url",
                "generic\" only",
            ),
            (
                "[oauth2.x]\nprovider = 'microsoft'\ntenant = 't'\nclient_id = 'a'\ngrant = 'client_credentials'\n",
                "oauth2.x.client_secret",
                "give one",
            ),
            ("[oauth2.x]\nprovider = 'okta'\nclient_id = 'a'\n", "oauth2.x.provider", "one of microsoft"),
            (&format!("{MAILBOX}auth = 'xoauth2'\noauth2 = 'nope'\n"), "mailbox[0].oauth2", "names no [oauth2.nope]"),
            (&format!("{MAILBOX}auth = 'xoauth2'\n"), "mailbox[0].oauth2", "is required"),
            (&format!("{MAILBOX}auth = 'sso'\n"), "mailbox[0].auth", "one of password, xoauth2"),
            ("[oauth2.M365]\nprovider = 'google'\nclient_id = 'a'\n", "oauth2.M365", "lower-case letters"),
        ];
        for (toml, key, message) in cases {
            let err = from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(&format!("{key}: ")) && err.contains(message), "{toml}\n→ {err}");
        }
        let both = format!(
            "[oauth2.g]\nprovider = 'google'\nclient_id = 'a'\n{MAILBOX}auth = 'oauthbearer'\noauth2 = 'g'\npassword = 'x'\n"
        );
        assert!(from_toml(&both).unwrap_err().to_string().contains("mailbox[0].password: is not used"));
    }

    /// The example config's commented `[oauth2.…]` sections are valid once uncommented.
    #[test]
    fn the_example_presets_are_valid() {
        let example = include_str!("../../config/postdesk.example.toml");
        let mut sections = String::new();
        let mut inside = false;
        for line in example.lines() {
            inside = line.starts_with("# [oauth2.") || (inside && line.starts_with("# "));
            if inside {
                sections.push_str(&line[2..]);
                sections.push('\n');
            }
        }
        let c = from_toml(&sections).unwrap();
        assert_eq!(c.oauth2.keys().collect::<Vec<_>>(), ["google", "idp", "m365"]);
    }

    #[test]
    fn a_loopback_test_server_may_be_plain_http() {
        let c = from_toml(
            "[oauth2.test]\nprovider = 'generic'\nclient_id = 'a'\nclient_secret = 's'\n\
             token_url = 'http://127.0.0.1:8080/token'\nscopes = ['imap']\n\
             [smtp]\nhost = 'smtp.example.com'\nusername = 'a@example.com'\nauth = 'oauthbearer'\noauth2 = 'test'\n",
        )
        .unwrap();
        let (user, login) = c.smtp.unwrap().credentials.unwrap();
        assert_eq!(user, "a@example.com");
        assert_eq!(login, Login::OAuth { mechanism: Mechanism::Oauthbearer, provider: "test".to_owned() });
    }
}
