//! The SMTP adapter: turns an acknowledgement into a mail and hands it to the configured
//! server (pooled connections; implicit TLS, STARTTLS that must be offered, plain text
//! only to loopback). It says whether a refusal is worth another try, and decides
//! nothing about when: that is the sender's business.
//!
//! The connections are opened here, not by lettre's transport, for one socket option:
//! lettre writes a message's final `.` in a write of its own, and with Nagle's algorithm
//! on that write waits for the server's delayed ACK (40 ms on Linux) on every message.
//! Our sockets have TCP_NODELAY; lettre speaks SMTP over them
//! (`AsyncSmtpConnection::connect_with_transport`).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::Message;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::config::{Login, SmtpConfig, TlsMode};
use crate::core::ack::Acknowledgement;
use crate::oauth::Keeper;
use crate::secret::Credential;

/// Why a mail was not taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SmtpError {
    /// No connection, a timeout, a 4xx reply: the same mail may be taken later.
    #[error("{0}")]
    Transient(String),
    /// A 5xx reply, or a mail that cannot be built: sending it again changes nothing.
    #[error("{0}")]
    Permanent(String),
}

/// How long one delivery may take from start to the server's last reply.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a connection may take to be opened, greeted, encrypted and logged in.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// An idle connection older than this is closed rather than used: servers drop idle
/// clients after a few minutes, and a dropped one would cost the next mail an attempt.
const IDLE_FOR: Duration = Duration::from_secs(60);
/// An idle connection older than this is asked for NOOP before it carries a mail; a
/// backlog's connections are younger and go on without the round trip.
const CHECK_AFTER: Duration = Duration::from_secs(5);

pub struct Smtp {
    host: String,
    port: u16,
    tls: Tls,
    /// Who signs in and how (a password, or an OAuth2 token fetched for each connection).
    login: Option<(String, Login)>,
    keeper: Arc<Keeper>,
    hello: ClientId,
    /// Connections that delivered their last mail, with when they did.
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    /// The most idle connections kept: as many as mails are sent at once.
    keep: usize,
    loop_header: String,
}

/// How a connection is encrypted.
enum Tls {
    /// TLS from the first byte (`implicit`), with our shared client settings.
    Implicit(Arc<rustls::ClientConfig>),
    /// STARTTLS, which the server must offer (`starttls`).
    Required(TlsParameters),
    /// Plain text, which the configuration allows only to a loopback address.
    None,
}

impl Smtp {
    /// `pool`: how many connections may be open at once (as many as mails sent at once).
    pub fn new(config: &SmtpConfig, loop_header: &str, pool: usize, keeper: Arc<Keeper>) -> Result<Smtp, String> {
        let tls = match config.tls {
            TlsMode::Implicit => Tls::Implicit(crate::tls::client_config(config.ca_file.as_deref())?),
            TlsMode::Starttls => Tls::Required(tls_parameters(config)?),
            TlsMode::None => Tls::None,
        };
        Ok(Smtp {
            host: config.host.clone(),
            port: config.port,
            tls,
            login: config.credentials.clone(),
            keeper,
            hello: ClientId::default(),
            idle: Mutex::new(Vec::new()),
            keep: pool,
            loop_header: loop_header.to_owned(),
        })
    }

    /// One delivery attempt: `Ok` once the server has accepted the mail.
    pub async fn send(&self, ack: &Acknowledgement) -> Result<(), SmtpError> {
        let message = message(ack, &self.loop_header)
            .map_err(|e| SmtpError::Permanent(format!("cannot build the message: {e}")))?;
        let attempt = async {
            let mut connection = self.connection().await?;
            let sent = connection.send(message.envelope(), &message.formatted()).await;
            if sent.is_ok() && !connection.has_broken() {
                self.put_back(connection);
            }
            sent.map(drop).map_err(refusal)
        };
        match tokio::time::timeout(SEND_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(SmtpError::Transient(format!("no answer within {}s", SEND_TIMEOUT.as_secs()))),
        }
    }

    /// The OAuth2 provider `[smtp]` signs in with, while it waits for `oauth login`.
    pub async fn waiting_for_sign_in(&self) -> Option<String> {
        match &self.login {
            Some((_, Login::OAuth { provider, .. })) if self.keeper.needs_sign_in(provider).await => {
                Some(provider.clone())
            }
            _ => None,
        }
    }

    /// Connects (and logs in, when configured) without sending anything.
    pub async fn check(&self) -> Result<(), String> {
        let mut connection = self.connection().await.map_err(|e| e.to_string())?;
        match connection.test_connected().await {
            true => connection.quit().await.map(drop).map_err(|e| e.to_string()),
            false => Err("the server did not answer NOOP".to_owned()),
        }
    }

    /// An idle connection young enough (one idle for a while must answer NOOP first: the
    /// server may have closed it), else a new one.
    async fn connection(&self) -> Result<AsyncSmtpConnection, SmtpError> {
        while let Some((mut connection, since)) = self.take_idle() {
            if since.elapsed() < CHECK_AFTER || connection.test_connected().await {
                return Ok(connection);
            }
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
            Ok(connected) => connected,
            Err(_) => Err(self.unreachable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))),
        }
    }

    fn take_idle(&self) -> Option<(AsyncSmtpConnection, Instant)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|(_, since)| since.elapsed() < IDLE_FOR);
        idle.pop()
    }

    fn put_back(&self, connection: AsyncSmtpConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.keep {
            idle.push((connection, Instant::now()));
        }
    }

    /// A new connection, greeted, encrypted as configured and logged in.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpError> {
        // First, so that a sign-in that is not possible now contacts no server.
        let credential = match &self.login {
            Some((user, login)) => {
                Some((user, self.keeper.credential(login).await.map_err(|e| SmtpError::Transient(e.to_string()))?))
            }
            None => None,
        };
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| self.unreachable(e))?;
        tcp.set_nodelay(true).map_err(|e| self.unreachable(e))?;
        let stream: Box<dyn AsyncTokioStream> = match &self.tls {
            Tls::Implicit(config) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| SmtpError::Permanent(format!("{:?} is no host name for TLS: {e}", self.host)))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(config)).connect(name, tcp).await;
                Box::new(Implicit(tls.map_err(|e| self.unreachable(format!("TLS: {e}")))?))
            }
            Tls::Required(_) | Tls::None => Box::new(tcp),
        };
        let mut connection = AsyncSmtpConnection::connect_with_transport(stream, &self.hello).await.map_err(refusal)?;
        if let Tls::Required(parameters) = &self.tls {
            // `starttls` refuses a server that does not offer it: never a silent downgrade.
            connection.starttls(parameters.clone(), &self.hello).await.map_err(refusal)?;
        }
        if let Some((user, credential)) = credential {
            let signed_in = self.sign_in(&mut connection, user, &credential).await;
            if let (Err(_), Some((_, login))) = (&signed_in, &self.login) {
                self.keeper.refused(login, &credential).await;
            }
            signed_in?;
        }
        Ok(connection)
    }

    /// AUTH with a password (PLAIN or LOGIN) or an OAuth2 token. A refused token is a
    /// transient failure: the mail waits while the token is renewed or signed in again.
    async fn sign_in(
        &self,
        connection: &mut AsyncSmtpConnection,
        user: &str,
        credential: &Credential,
    ) -> Result<(), SmtpError> {
        let token_refused = |why: String| SmtpError::Transient(format!("token refused: {why}"));
        match credential {
            Credential::Password(password) => {
                let credentials = Credentials::new(user.to_owned(), password.expose().to_owned());
                connection.auth(&[Mechanism::Plain, Mechanism::Login], &credentials).await.map_err(refusal)?;
            }
            Credential::Token(mechanism, token) => {
                let first = mechanism.initial_response(user, &self.host, self.port, token.expose());
                let mechanism = *mechanism;
                let reply = connection.command(Sasl::initial(mechanism.name(), &first)).await;
                let reply = reply.map_err(|e| token_refused(e.to_string()))?;
                if reply.has_code(334) {
                    // The server's error report, answered so that it ends with its refusal.
                    let end = connection.command(Sasl::answer(mechanism.error_answer())).await;
                    let why = end.err().map_or_else(|| "the server refused it".to_owned(), |e| e.to_string());
                    return Err(token_refused(why));
                }
            }
        }
        Ok(())
    }

    /// The server could not be reached: worth another try later.
    fn unreachable(&self, why: impl std::fmt::Display) -> SmtpError {
        SmtpError::Transient(format!("cannot connect to {}:{}: {why}", self.host, self.port))
    }
}

/// An AUTH line of an OAuth2 mechanism, sent by hand: lettre has no OAUTHBEARER, and its
/// XOAUTH2 cannot answer the server's error report. Base64, ended by CRLF. Its Display is
/// the line on the wire, token included: only `command` may print it, never a log.
struct Sasl(String);

impl Sasl {
    fn initial(mechanism: &str, response: &str) -> Sasl {
        use base64::Engine;
        Sasl(format!("AUTH {mechanism} {}", base64::engine::general_purpose::STANDARD.encode(response)))
    }

    fn answer(response: &str) -> Sasl {
        use base64::Engine;
        Sasl(base64::engine::general_purpose::STANDARD.encode(response))
    }
}

impl std::fmt::Display for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\r\n", self.0)
    }
}

/// What a refusal of the server (or a failure of the conversation) means for the mail.
fn refusal(e: lettre::transport::smtp::Error) -> SmtpError {
    match e.is_permanent() {
        true => SmtpError::Permanent(e.to_string()),
        false => SmtpError::Transient(e.to_string()),
    }
}

/// A connection encrypted from its first byte, as lettre takes a stream it did not open.
#[derive(Debug)]
struct Implicit(TlsStream<TcpStream>);

impl AsyncTokioStream for Implicit {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for Implicit {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Implicit {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

fn tls_parameters(config: &SmtpConfig) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(config.host.clone());
    if let Some(ca) = &config.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
        let cert = Certificate::from_pem(&pem).map_err(|e| format!("bad certificate in {}: {e}", ca.display()))?;
        builder = builder.certificate_store(CertificateStore::None).add_root_certificate(cert);
    }
    builder.build_rustls().map_err(|e| e.to_string())
}

/// The mail of an outbox row; only an acknowledgement is marked as an automatic reply.
/// Every value was made header-safe when it was queued;
/// lettre encodes non-ASCII text.
/// An empty display name is none.
fn message(ack: &Acknowledgement, loop_header: &str) -> Result<Message, String> {
    let mailbox = |name: Option<&str>, address: &str| -> Result<Mailbox, String> {
        let name = name.filter(|n| !n.is_empty()).map(str::to_owned);
        Ok(Mailbox::new(name, address.parse().map_err(|e| format!("{address}: {e}"))?))
    };
    let mut builder = Message::builder()
        .from(mailbox(Some(&ack.from_name), &ack.from)?)
        .to(mailbox(ack.to_name.as_deref(), &ack.to)?)
        .subject(&ack.subject)
        .message_id(Some(format!("<{}>", ack.message_id)));
    if let Some(id) = &ack.in_reply_to {
        builder = builder.in_reply_to(format!("<{id}>"));
    }
    if !ack.references.is_empty() {
        let refs: Vec<String> = ack.references.iter().map(|r| format!("<{r}>")).collect();
        builder = builder.references(refs.join(" "));
    }
    let header = |name: &str, value: &str| -> Result<HeaderValue, String> {
        let name = HeaderName::new_from_ascii(name.to_owned()).map_err(|e| e.to_string())?;
        Ok(HeaderValue::new(name, value.to_owned()))
    };
    if let Some(auto) = ack.kind.auto_submitted() {
        builder =
            builder.raw_header(header("Auto-Submitted", auto)?).raw_header(header("X-Auto-Response-Suppress", "All")?);
    }
    builder
        // Our address, and the Message-ID of this very mail: a loop header that names one
        // of our acknowledgements is proof a mail came from us (`core::trust`), which a
        // loop header with only an address a sender can copy is not.
        .raw_header(header(loop_header, &format!("{} <{}>", ack.from, ack.message_id))?)
        .header(ContentType::TEXT_PLAIN)
        .body(ack.body.clone())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ack::MailKind;

    fn ack() -> Acknowledgement {
        Acknowledgement {
            kind: MailKind::Ack,
            to: "judy@umbrella.example".to_owned(),
            to_name: Some("Jüdy Chen".to_owned()),
            from: "support@helpdesk.example".to_owned(),
            from_name: "Helpdesk".to_owned(),
            subject: "[Ticket#2026112310000012] Grüße".to_owned(),
            body: "Hello".to_owned(),
            message_id: "ack.2026112310000012@helpdesk.example".to_owned(),
            in_reply_to: Some("m1@umbrella.example".to_owned()),
            references: vec!["m0@umbrella.example".to_owned(), "m1@umbrella.example".to_owned()],
        }
    }

    #[test]
    fn the_acknowledgement_carries_threading_and_anti_loop_headers() {
        let text = String::from_utf8(message(&ack(), "X-Postdesk-Loop").unwrap().formatted()).unwrap();
        for needle in [
            "Auto-Submitted: auto-replied\r\n",
            "X-Auto-Response-Suppress: All\r\n",
            "X-Postdesk-Loop: support@helpdesk.example\r\n <ack.2026112310000012@helpdesk.example>\r\n",
            "Message-ID: <ack.2026112310000012@helpdesk.example>\r\n",
            "In-Reply-To: <m1@umbrella.example>\r\n",
            "References: <m0@umbrella.example> <m1@umbrella.example>\r\n",
            "Subject: [Ticket#2026112310000012] =?utf-8?b?R3LDvMOfZQ==?=\r\n",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert!(text.is_ascii(), "non-ASCII must be encoded:\n{text}");
    }

    /// An agent's reply is a person's mail: an autoresponder must answer it as one.
    #[test]
    fn a_reply_is_not_marked_automatic() {
        let reply = Acknowledgement { kind: MailKind::Reply, ..ack() };
        let text = String::from_utf8(message(&reply, "X-Postdesk-Loop").unwrap().formatted()).unwrap();
        assert!(!text.contains("Auto-Submitted") && !text.contains("X-Auto-Response-Suppress"), "{text}");
        assert!(text.contains("In-Reply-To: <m1@umbrella.example>\r\n"), "{text}");
    }
}
