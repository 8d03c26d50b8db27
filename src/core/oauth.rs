//! OAuth2 sign-in, the pure part: the providers' endpoints and scopes, when a token is
//! renewed, what a refused renewal means, and the SASL messages that carry a token to
//! IMAP and SMTP (XOAUTH2, RFC 7628 OAUTHBEARER). The HTTP flows are `crate::oauth`'s.

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use crate::secret::Secret;

/// An access token and its lifetime.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub secret: Secret,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What a grant returned.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access: AccessToken,
    /// A new refresh token, when the provider gives (or rotates) one.
    pub refresh_token: Option<Secret>,
}

/// A grant that failed: what it means, and the words for the logs and `oauth status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub refusal: Refusal,
    pub why: String,
}

/// Whose endpoints: Microsoft and Google are filled in, anything else is `generic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Microsoft,
    Google,
    Generic,
}

/// How the daemon gets its access tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// A person signs in once (`postdesk oauth login`); the refresh token it leaves is
    /// exchanged for access tokens from then on.
    #[default]
    RefreshToken,
    /// The application itself, with its client secret (Microsoft's application access
    /// to mailboxes): no person, no refresh token.
    ClientCredentials,
}

/// The SASL mechanism a token is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// Google's and Microsoft's own mechanism.
    Xoauth2,
    /// RFC 7628.
    Oauthbearer,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Xoauth2 => "XOAUTH2",
            Mechanism::Oauthbearer => "OAUTHBEARER",
        }
    }

    /// The client's first message (before base64): who signs in, with which token, and
    /// for OAUTHBEARER where to.
    pub fn initial_response(self, user: &str, host: &str, port: u16, token: &str) -> String {
        match self {
            Mechanism::Xoauth2 => format!("user={user}\x01auth=Bearer {token}\x01\x01"),
            Mechanism::Oauthbearer => {
                format!("n,a={},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01", gs2_name(user))
            }
        }
    }

    /// The client's answer to a challenge after its first message, which is the
    /// server's error report: XOAUTH2 wants an empty line, RFC 7628 a lone %x01; either
    /// way the server then ends the exchange with its refusal.
    pub fn error_answer(self) -> &'static str {
        match self {
            Mechanism::Xoauth2 => "",
            Mechanism::Oauthbearer => "\x01",
        }
    }
}

/// RFC 5801's escaping of a name in the GS2 header: `,` and `=` are special there.
fn gs2_name(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

/// Where a provider signs people in and hands out tokens, and what is asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoints {
    pub authorization_url: Option<String>,
    pub token_url: String,
    pub device_authorization_url: Option<String>,
    pub scopes: Vec<String>,
}

/// The endpoints of Microsoft (Entra ID, for `tenant`) and Google, for `grant`; `None`
/// for `generic`, whose endpoints the configuration names.
pub fn preset(kind: ProviderKind, tenant: &str, grant: Grant) -> Option<Endpoints> {
    let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    match kind {
        ProviderKind::Microsoft => {
            let base = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
            let scopes = match grant {
                // Application access asks for what the app registration was granted.
                Grant::ClientCredentials => strings(&["https://outlook.office365.com/.default"]),
                Grant::RefreshToken => strings(&[
                    "https://outlook.office.com/IMAP.AccessAsUser.All",
                    "https://outlook.office.com/SMTP.Send",
                    "offline_access",
                ]),
            };
            Some(Endpoints {
                authorization_url: Some(format!("{base}/authorize")),
                token_url: format!("{base}/token"),
                device_authorization_url: Some(format!("{base}/devicecode")),
                scopes,
            })
        }
        // Google's device flow does not allow the mail scope: sign-in is in a browser.
        ProviderKind::Google => Some(Endpoints {
            authorization_url: Some("https://accounts.google.com/o/oauth2/v2/auth".to_owned()),
            token_url: "https://oauth2.googleapis.com/token".to_owned(),
            device_authorization_url: None,
            scopes: strings(&["https://mail.google.com/"]),
        }),
        ProviderKind::Generic => None,
    }
}

/// When a token valid from `issued` to `expires` is renewed: a quarter of its life
/// before it ends, and never more than five minutes before, so that no login ever waits
/// for a renewal nor uses a token about to end.
pub fn renew_at(issued: DateTime<Utc>, expires: DateTime<Utc>) -> DateTime<Utc> {
    let margin = ((expires - issued) / 4).min(Duration::minutes(5)).max(Duration::zero());
    expires - margin
}

/// What a token endpoint's error means for the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The sign-in is gone (revoked, expired, password changed, consent withdrawn):
    /// only `postdesk oauth login` helps, and asking again changes nothing.
    NeedsSignIn,
    /// The client itself is refused (wrong secret, app registration changed): only a
    /// configuration change helps.
    Client,
    /// Anything else (a server error, an answer we do not understand): may pass.
    Other,
}

/// RFC 6749 §5.2 error codes, as `Refusal`.
pub fn refusal(error_code: &str) -> Refusal {
    match error_code {
        "invalid_grant" | "interaction_required" | "consent_required" | "login_required" => Refusal::NeedsSignIn,
        "invalid_client" | "unauthorized_client" | "invalid_scope" | "unsupported_grant_type" => Refusal::Client,
        _ => Refusal::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_messages_follow_the_specifications() {
        let x = Mechanism::Xoauth2.initial_response("help@example.com", "imap.example.com", 993, "tok");
        assert_eq!(x, "user=help@example.com\x01auth=Bearer tok\x01\x01");
        let o = Mechanism::Oauthbearer.initial_response("a,b=c@example.com", "imap.example.com", 993, "tok");
        assert_eq!(o, "n,a=a=2Cb=3Dc@example.com,\x01host=imap.example.com\x01port=993\x01auth=Bearer tok\x01\x01");
    }

    #[test]
    fn tokens_are_renewed_before_they_end() {
        let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        assert_eq!(renew_at(t(0), t(3600)), t(3300), "an hour: five minutes before");
        assert_eq!(renew_at(t(0), t(4)), t(3), "seconds: a quarter before");
        assert_eq!(renew_at(t(10), t(0)), t(0), "already over");
    }

    #[test]
    fn presets_name_the_endpoints_and_scopes() {
        let m = preset(ProviderKind::Microsoft, "contoso.onmicrosoft.com", Grant::RefreshToken).unwrap();
        assert_eq!(m.token_url, "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
        assert!(m.device_authorization_url.is_some() && m.scopes.contains(&"offline_access".to_owned()));
        let app = preset(ProviderKind::Microsoft, "contoso", Grant::ClientCredentials).unwrap();
        assert_eq!(app.scopes, ["https://outlook.office365.com/.default"]);
        let g = preset(ProviderKind::Google, "", Grant::RefreshToken).unwrap();
        assert_eq!((g.device_authorization_url, g.scopes), (None, vec!["https://mail.google.com/".to_owned()]));
        assert_eq!(preset(ProviderKind::Generic, "", Grant::RefreshToken), None);
    }

    #[test]
    fn a_refused_grant_needs_a_new_sign_in() {
        assert_eq!(refusal("invalid_grant"), Refusal::NeedsSignIn);
        assert_eq!(refusal("invalid_client"), Refusal::Client);
        assert_eq!(refusal("temporarily_unavailable"), Refusal::Other);
    }
}
