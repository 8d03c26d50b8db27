//! The IMAP adapter: connecting (implicit TLS, STARTTLS that never falls back to plain
//! text, plain text only to loopback), logging in, and the few commands the daemon
//! uses. Every network step is bounded by a timeout. It decides nothing about mail.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_imap::types::Fetch;
use futures_util::TryStreamExt;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

use crate::config::{MailboxConfig, TlsMode};
use crate::core::oauth::Mechanism;
use crate::oauth::CredentialError;
use crate::secret::Credential;

pub type Conn = Either<TlsStream<TcpStream>, TcpStream>;
pub type Session = async_imap::Session<Conn>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("TLS with {0} failed: {1}")]
    Tls(String, String),
    #[error("{0} does not offer STARTTLS (server said: {1}); refusing to continue without encryption")]
    NoStarttls(String, String),
    #[error("login as {0} refused: {1}")]
    Auth(String, String),
    #[error("the password cannot be read: {0}")]
    Password(String),
    /// The OAuth2 sign-in was refused: only `postdesk oauth login PROVIDER` helps.
    #[error("{message}")]
    NeedsSignIn { provider: String, message: String },
    /// No OAuth2 access token now (the token endpoint is down, the client refused).
    #[error("{message}")]
    Token { message: String, retry: Retry },
    #[error("timed out while {0}")]
    Timeout(&'static str),
    #[error("{0}: {1}")]
    Protocol(&'static str, String),
}

/// Whether another try may help soon. Every failure is tried again while the daemon
/// runs (a password fixed on the server, a certificate renewed, are picked up without a
/// restart), but not at the same pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The network or the server (refused or dropped connection, timeout, an answer we
    /// did not expect): passes by itself. Backoff from a second.
    Soon,
    /// Only an operator fixes it: a refused login, an unreadable password, a certificate
    /// that does not verify, a server without STARTTLS. Backoff from a minute, so that
    /// our logins never lock the account nor fill the server's log.
    Slowly,
}

impl ImapError {
    pub fn retry(&self) -> Retry {
        match self {
            ImapError::Auth(..) | ImapError::Password(..) | ImapError::Tls(..) | ImapError::NoStarttls(..) => {
                Retry::Slowly
            }
            ImapError::NeedsSignIn { .. } => Retry::Slowly,
            ImapError::Token { retry, .. } => *retry,
            ImapError::Connect(..) | ImapError::Timeout(..) | ImapError::Protocol(..) => Retry::Soon,
        }
    }

    /// Errors of one kind count as the same connection state for logging.
    pub fn kind(&self) -> &'static str {
        match self {
            ImapError::Connect(..) => "connect",
            ImapError::Tls(..) => "tls",
            ImapError::NoStarttls(..) => "starttls",
            ImapError::Auth(..) => "auth",
            ImapError::Password(..) => "password",
            ImapError::NeedsSignIn { .. } => "oauth-sign-in",
            ImapError::Token { .. } => "oauth-token",
            ImapError::Timeout(..) => "timeout",
            ImapError::Protocol(..) => "protocol",
        }
    }
}

async fn bounded<T, E: std::fmt::Display>(
    what: &'static str,
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ImapError> {
    match timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ImapError::Protocol(what, e.to_string())),
        Err(_) => Err(ImapError::Timeout(what)),
    }
}

impl From<CredentialError> for ImapError {
    fn from(e: CredentialError) -> ImapError {
        match e {
            CredentialError::Password(why) => ImapError::Password(why),
            CredentialError::NeedsSignIn { ref provider, .. } => {
                ImapError::NeedsSignIn { provider: provider.clone(), message: e.to_string() }
            }
            CredentialError::Unavailable { refusal, .. } => {
                let retry = if refusal == crate::core::oauth::Refusal::Client { Retry::Slowly } else { Retry::Soon };
                ImapError::Token { message: e.to_string(), retry }
            }
            CredentialError::Store(e) => ImapError::Token { message: e.to_string(), retry: Retry::Soon },
        }
    }
}

/// Connects, secures the connection as configured and signs in with `credential`.
pub async fn connect(m: &MailboxConfig, credential: &Credential) -> Result<Session, ImapError> {
    let endpoint = format!("{}:{}", m.host, m.port);
    let tcp = match timeout(CONNECT_TIMEOUT, TcpStream::connect((m.host.as_str(), m.port))).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(ImapError::Connect(endpoint, e.to_string())),
        Err(_) => return Err(ImapError::Connect(endpoint, "timed out".to_owned())),
    };
    keep_alive(&tcp);
    let client = match m.tls {
        TlsMode::Implicit => {
            let mut client = async_imap::Client::new(Either::Left(tls(m, tcp).await?));
            greeting(&mut client).await?;
            client
        }
        TlsMode::Starttls => {
            let mut plain = async_imap::Client::new(Either::Right(tcp));
            greeting(&mut plain).await?;
            let upgrade = timeout(COMMAND_TIMEOUT, plain.run_command_and_check_ok("STARTTLS", None)).await;
            match upgrade {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(ImapError::NoStarttls(endpoint, e.to_string())),
                Err(_) => return Err(ImapError::Timeout("waiting for STARTTLS")),
            }
            let Either::Right(tcp) = plain.into_inner() else { unreachable!("the plain stream is TCP") };
            async_imap::Client::new(Either::Left(tls(m, tcp).await?))
        }
        TlsMode::None => {
            let mut client = async_imap::Client::new(Either::Right(tcp));
            greeting(&mut client).await?;
            client
        }
    };
    let signed_in = match credential {
        Credential::Password(password) => timeout(COMMAND_TIMEOUT, client.login(&m.username, password.expose())).await,
        Credential::Token(mechanism, token) => {
            let first = mechanism.initial_response(&m.username, &m.host, m.port, token.expose());
            let sasl = Sasl { first: Some(first), mechanism: *mechanism };
            timeout(COMMAND_TIMEOUT, client.authenticate(mechanism.name(), sasl)).await
        }
    };
    match signed_in {
        Ok(Ok(session)) => Ok(session),
        Ok(Err((e, _))) => Err(ImapError::Auth(m.username.clone(), e.to_string())),
        Err(_) => Err(ImapError::Timeout("logging in")),
    }
}

/// An OAuth2 SASL exchange: the token first; a challenge after it is the server's
/// error report, answered as each mechanism says so that the server ends with NO.
struct Sasl {
    first: Option<String>,
    mechanism: Mechanism,
}

impl async_imap::Authenticator for Sasl {
    type Response = String;

    fn process(&mut self, _challenge: &[u8]) -> String {
        self.first.take().unwrap_or_else(|| self.mechanism.error_answer().to_owned())
    }
}

/// TCP keepalive (probes after a minute of silence, every 15 s, 4 of them): a peer that
/// vanished without closing (a half-open connection) is noticed by the kernel too.
fn keep_alive(tcp: &TcpStream) {
    let probes = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(15))
        .with_retries(4);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&probes) {
        tracing::debug!("cannot set TCP keepalive: {e}");
    }
}

async fn tls(m: &MailboxConfig, tcp: TcpStream) -> Result<TlsStream<TcpStream>, ImapError> {
    let endpoint = format!("{}:{}", m.host, m.port);
    let config = crate::tls::client_config(m.ca_file.as_deref()).map_err(|e| ImapError::Tls(endpoint.clone(), e))?;
    let name = ServerName::try_from(m.host.clone()).map_err(|e| ImapError::Tls(endpoint.clone(), e.to_string()))?;
    let handshake = TlsConnector::from(Arc::clone(&config)).connect(name, tcp);
    match timeout(CONNECT_TIMEOUT, handshake).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(ImapError::Tls(endpoint, e.to_string())),
        Err(_) => Err(ImapError::Timeout("negotiating TLS")),
    }
}

async fn greeting(client: &mut async_imap::Client<Conn>) -> Result<(), ImapError> {
    match timeout(COMMAND_TIMEOUT, client.read_response()).await {
        Ok(Ok(Some(_))) => Ok(()),
        Ok(Ok(None)) => Err(ImapError::Protocol("reading the greeting", "connection closed".to_owned())),
        Ok(Err(e)) => Err(ImapError::Protocol("reading the greeting", e.to_string())),
        Err(_) => Err(ImapError::Timeout("waiting for the greeting")),
    }
}

/// What the server supports of what we use.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    pub idle: bool,
    pub r#move: bool,
    pub uidplus: bool,
}

pub async fn capabilities(session: &mut Session) -> Result<Capabilities, ImapError> {
    let caps = bounded("asking for capabilities", COMMAND_TIMEOUT, session.capabilities()).await?;
    Ok(Capabilities { idle: caps.has_str("IDLE"), r#move: caps.has_str("MOVE"), uidplus: caps.has_str("UIDPLUS") })
}

/// Selects a folder; its UIDVALIDITY.
pub async fn select(session: &mut Session, folder: &str) -> Result<u32, ImapError> {
    let mailbox = bounded("selecting the folder", COMMAND_TIMEOUT, session.select(folder)).await?;
    mailbox.uid_validity.ok_or(ImapError::Protocol("selecting the folder", "no UIDVALIDITY".to_owned()))
}

/// Creates `folder` unless it exists.
pub async fn ensure_folder(session: &mut Session, folder: &str) -> Result<(), ImapError> {
    let pattern = quote(folder);
    let names: Vec<_> = bounded("listing folders", COMMAND_TIMEOUT, async {
        session.list(None, Some(&pattern)).await?.try_collect::<Vec<_>>().await
    })
    .await?;
    if names.is_empty() {
        bounded("creating a folder", COMMAND_TIMEOUT, session.create(folder)).await?;
    }
    Ok(())
}

fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// UIDs of the messages waiting: unseen ones, or all when processed mail leaves the folder.
pub async fn waiting(session: &mut Session, only_unseen: bool) -> Result<Vec<u32>, ImapError> {
    let query = if only_unseen { "UNSEEN" } else { "ALL" };
    let found = bounded("searching for new mail", COMMAND_TIMEOUT, session.uid_search(query)).await?;
    let mut uids: Vec<u32> = found.into_iter().collect();
    uids.sort_unstable();
    Ok(uids)
}

/// Which of `uids` are still in the selected folder (and, with `only_unseen`, unseen):
/// after a post-action that may have completed on the server although we gave up on it,
/// only these get it again. A NOOP first lets the server tell this session what other
/// sessions (our post-action connection, one we abandoned) expunged meanwhile.
pub async fn still_waiting(session: &mut Session, uids: &[u32], only_unseen: bool) -> Result<Vec<u32>, ImapError> {
    if uids.is_empty() {
        return Ok(Vec::new());
    }
    bounded("checking the folder", COMMAND_TIMEOUT, session.noop()).await?;
    let query = format!("UID {}{}", uid_set(uids), if only_unseen { " UNSEEN" } else { "" });
    let found = bounded("searching for messages", COMMAND_TIMEOUT, session.uid_search(&query)).await?;
    let mut uids: Vec<u32> = found.into_iter().collect();
    uids.sort_unstable();
    Ok(uids)
}

/// `UID FETCH` of `items` for `uids`: what `take` keeps of each response, keyed by UID.
/// Each response is dropped as soon as it is read: a response holds on to the buffer it
/// was read into, and ten thousand of them held at once (the sizes of a backlog) would
/// keep far more memory than the sizes they carry.
async fn fetch<T>(
    session: &mut Session,
    uids: &[u32],
    items: &str,
    take: impl Fn(&Fetch) -> Option<T>,
) -> Result<HashMap<u32, T>, ImapError> {
    let set = uid_set(uids);
    bounded("fetching messages", COMMAND_TIMEOUT, async {
        let mut kept = HashMap::with_capacity(uids.len());
        let mut responses = session.uid_fetch(&set, items).await?;
        while let Some(f) = responses.try_next().await? {
            if let (Some(uid), Some(value)) = (f.uid, take(&f)) {
                kept.insert(uid, value);
            }
        }
        Ok::<_, async_imap::error::Error>(kept)
    })
    .await
}

pub async fn sizes(session: &mut Session, uids: &[u32]) -> Result<HashMap<u32, u32>, ImapError> {
    fetch(session, uids, "RFC822.SIZE", |f| f.size).await
}

/// Whole messages, without setting `\Seen` (`BODY.PEEK[]`).
pub async fn bodies(session: &mut Session, uids: &[u32]) -> Result<HashMap<u32, Vec<u8>>, ImapError> {
    fetch(session, uids, "BODY.PEEK[]", |f| f.body().map(<[u8]>::to_vec)).await
}

/// Only the header section, for messages too large to download.
pub async fn headers(session: &mut Session, uids: &[u32]) -> Result<HashMap<u32, Vec<u8>>, ImapError> {
    fetch(session, uids, "BODY.PEEK[HEADER]", |f| f.header().map(<[u8]>::to_vec)).await
}

async fn store_flags(session: &mut Session, uids: &[u32], change: &str) -> Result<(), ImapError> {
    let set = uid_set(uids);
    bounded("setting flags", COMMAND_TIMEOUT, async {
        session.uid_store(&set, change).await?.try_collect::<Vec<_>>().await
    })
    .await?;
    Ok(())
}

pub async fn mark_seen(session: &mut Session, uids: &[u32]) -> Result<(), ImapError> {
    store_flags(session, uids, "+FLAGS.SILENT (\\Seen)").await
}

/// Expunges exactly `uids` when the server has UIDPLUS, else every deleted message.
async fn expunge(session: &mut Session, uids: &[u32], caps: Capabilities) -> Result<(), ImapError> {
    store_flags(session, uids, "+FLAGS.SILENT (\\Deleted)").await?;
    let set = uid_set(uids);
    bounded("expunging", COMMAND_TIMEOUT, async {
        if caps.uidplus {
            session.uid_expunge(&set).await?.try_collect::<Vec<_>>().await
        } else {
            session.expunge().await?.try_collect::<Vec<_>>().await
        }
    })
    .await?;
    Ok(())
}

pub async fn delete(session: &mut Session, uids: &[u32], caps: Capabilities) -> Result<(), ImapError> {
    expunge(session, uids, caps).await
}

/// MOVE (RFC 6851), or COPY + `\Deleted` + expunge where the server lacks it.
pub async fn move_to(session: &mut Session, uids: &[u32], folder: &str, caps: Capabilities) -> Result<(), ImapError> {
    let set = uid_set(uids);
    if caps.r#move {
        return bounded("moving messages", COMMAND_TIMEOUT, session.uid_mv(&set, folder)).await;
    }
    bounded("copying messages", COMMAND_TIMEOUT, session.uid_copy(&set, folder)).await?;
    expunge(session, uids, caps).await
}

/// A compact UID set: `1:3,7,9:10`.
pub fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        parts.push(if sorted[i] == start { start.to_string() } else { format!("{start}:{}", sorted[i]) });
        i += 1;
    }
    parts.join(",")
}

pub async fn logout(mut session: Session) {
    let _ = timeout(Duration::from_secs(5), session.logout()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets() {
        assert_eq!(uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(uid_set(&[5]), "5");
        assert_eq!(uid_set(&[10, 9, 9, 1]), "1,9:10");
    }

    #[test]
    fn folder_names_are_quoted() {
        assert_eq!(quote("Processed"), "\"Processed\"");
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
