//! The SMTP adapter: turns an outbox row into a mail and hands it to the configured
//! server (pooled connections; implicit TLS, STARTTLS that must be offered, plain text
//! only to loopback). It reports each attempt as accepted, transient or permanent.

use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpConfig, TlsMode};
use crate::core::retry::Attempt;
use crate::store::outbox::OutboxRow;

pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    loop_header: String,
}

impl Smtp {
    pub fn new(config: &SmtpConfig, loop_header: &str) -> Result<Smtp, String> {
        let pool = PoolConfig::new().max_size(crate::outbox::PARALLEL as u32);
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

    /// One delivery attempt.
    pub async fn send(&self, row: &OutboxRow) -> Attempt {
        let message = match message(row, &self.loop_header) {
            Ok(m) => m,
            Err(e) => return Attempt::Permanent(format!("cannot build the message: {e}")),
        };
        match self.transport.send(message).await {
            Ok(_) => Attempt::Accepted,
            Err(e) if e.is_permanent() => Attempt::Permanent(e.to_string()),
            Err(e) => Attempt::Transient(e.to_string()),
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

/// The acknowledgement mail. Every value was made header-safe when it was queued;
/// lettre encodes non-ASCII text.
fn message(row: &OutboxRow, loop_header: &str) -> Result<Message, String> {
    let mailbox = |name: &Option<String>, address: &str| -> Result<Mailbox, String> {
        Ok(Mailbox::new(name.clone(), address.parse().map_err(|e| format!("{address}: {e}"))?))
    };
    let mut builder = Message::builder()
        .from(mailbox(&row.sender_name, &row.sender)?)
        .to(mailbox(&row.recipient_name, &row.recipient)?)
        .subject(&row.subject)
        .message_id(Some(format!("<{}>", row.message_id)));
    if let Some(id) = &row.in_reply_to {
        builder = builder.in_reply_to(format!("<{id}>"));
    }
    if !row.references.is_empty() {
        let refs: Vec<String> = row.references.iter().map(|r| format!("<{r}>")).collect();
        builder = builder.references(refs.join(" "));
    }
    let header = |name: &str, value: &str| -> Result<HeaderValue, String> {
        let name = HeaderName::new_from_ascii(name.to_owned()).map_err(|e| e.to_string())?;
        Ok(HeaderValue::new(name, value.to_owned()))
    };
    builder
        .raw_header(header("Auto-Submitted", "auto-replied")?)
        .raw_header(header("X-Auto-Response-Suppress", "All")?)
        // Our address, and the Message-ID of this very mail: a loop header that names one
        // of our acknowledgements is proof a mail came from us (`core::trust`), which a
        // loop header with only an address a sender can copy is not.
        .raw_header(header(loop_header, &format!("{} <{}>", row.sender, row.message_id))?)
        .header(ContentType::TEXT_PLAIN)
        .body(row.body_text.clone())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> OutboxRow {
        OutboxRow {
            id: 1,
            ticket: "2026112310000012".to_owned(),
            recipient: "judy@umbrella.example".to_owned(),
            recipient_name: Some("Jüdy Chen".to_owned()),
            sender: "support@helpdesk.example".to_owned(),
            sender_name: Some("Helpdesk".to_owned()),
            subject: "[Ticket#2026112310000012] Grüße".to_owned(),
            body_text: "Hello".to_owned(),
            message_id: "ack.2026112310000012@helpdesk.example".to_owned(),
            in_reply_to: Some("m1@umbrella.example".to_owned()),
            references: vec!["m0@umbrella.example".to_owned(), "m1@umbrella.example".to_owned()],
            state: "queued".to_owned(),
            attempts: 0,
            last_error: None,
            next_attempt_at: String::new(),
            sent_at: None,
            created_at: String::new(),
        }
    }

    #[test]
    fn the_acknowledgement_carries_threading_and_anti_loop_headers() {
        let text = String::from_utf8(message(&row(), "X-Postdesk-Loop").unwrap().formatted()).unwrap();
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
}
