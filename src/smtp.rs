//! The SMTP adapter: turns an acknowledgement into a mail and hands it to the configured
//! server (pooled connections; implicit TLS, STARTTLS that must be offered, plain text
//! only to loopback). It says whether a refusal is worth another try, and decides
//! nothing about when: that is the sender's business.

use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpConfig, TlsMode};
use crate::core::ack::Acknowledgement;

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

pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    loop_header: String,
}

impl Smtp {
    /// `pool`: how many connections may be open at once (as many as mails sent at once).
    pub fn new(config: &SmtpConfig, loop_header: &str, pool: usize) -> Result<Smtp, String> {
        let pool = PoolConfig::new().max_size(u32::try_from(pool).unwrap_or(u32::MAX));
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .timeout(Some(Duration::from_secs(60)))
            .pool_config(pool);
        let params = || tls_parameters(config);
        builder = match config.tls {
            TlsMode::Implicit => builder.tls(Tls::Wrapper(params()?)),
            TlsMode::Starttls => builder.tls(Tls::Required(params()?)),
            TlsMode::None => builder.tls(Tls::None),
        };
        if let Some((user, source)) = &config.credentials {
            let password = source.read()?;
            builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(Smtp { transport: builder.build(), loop_header: loop_header.to_owned() })
    }

    /// One delivery attempt: `Ok` once the server has accepted the mail.
    pub async fn send(&self, ack: &Acknowledgement) -> Result<(), SmtpError> {
        let message = message(ack, &self.loop_header)
            .map_err(|e| SmtpError::Permanent(format!("cannot build the message: {e}")))?;
        // lettre's own timeout bounds only the connect, not the conversation after it: a
        // server that stops answering mid-transaction would hold the attempt for ever.
        match tokio::time::timeout(SEND_TIMEOUT, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_permanent() => Err(SmtpError::Permanent(e.to_string())),
            Ok(Err(e)) => Err(SmtpError::Transient(e.to_string())),
            Err(_) => Err(SmtpError::Transient(format!("no answer within {}s", SEND_TIMEOUT.as_secs()))),
        }
    }

    /// Connects (and logs in, when configured) without sending anything.
    pub async fn check(&self) -> Result<(), String> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err("the server did not answer NOOP".to_owned()),
            Err(e) => Err(e.to_string()),
        }
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
