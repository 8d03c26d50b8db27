//! Acknowledgements as data: whether a new ticket gets one, and the mail itself
//! (recipient, tagged subject, rendered body, threading and anti-loop headers). Pure:
//! the store counts recent acknowledgements; the SMTP adapter only delivers.

use serde::Serialize;

use super::address;
use super::classify::Kind;
use super::parse::Inbound;
use super::resolve::Sender;

/// A compiled acknowledgement template (minijinja syntax).
#[derive(Debug)]
pub struct AckTemplate(minijinja::Environment<'static>);

impl AckTemplate {
    const NAME: &'static str = "acknowledgement";

    /// Compiles a template, so that a broken one is caught when the config is loaded.
    pub fn new(source: String) -> Result<Self, String> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.add_template_owned(Self::NAME, source).map_err(|e| e.to_string())?;
        Ok(AckTemplate(env))
    }

    /// Renders with sample values of every variable, so that a template naming an
    /// unknown variable fails when the configuration is checked, not at the first ticket.
    pub fn check(&self) -> Result<(), String> {
        let sample = TemplateContext {
            ticket_number: "2026112310000017",
            tag: "[Ticket#2026112310000017]",
            subject: "Printer on floor 3 is jammed",
            customer_name: Some("Alice Martin"),
            customer_email: "alice@customer.example",
            organisation: Some("Customer Ltd"),
            helpdesk_name: "Helpdesk",
        };
        self.render(&sample).map(drop)
    }

    fn render(&self, ctx: &TemplateContext) -> Result<String, String> {
        let template = self.0.get_template(Self::NAME).map_err(|e| e.to_string())?;
        template.render(minijinja::value::Serde(ctx)).map_err(|e| e.to_string())
    }
}

#[derive(Debug)]
pub struct AckPolicy {
    pub enabled: bool,
    pub from_name: String,
    pub helpdesk_name: String,
    pub max_per_sender_per_day: u32,
    pub template: AckTemplate,
}

#[derive(Serialize)]
struct TemplateContext<'a> {
    ticket_number: &'a str,
    tag: &'a str,
    subject: &'a str,
    customer_name: Option<&'a str>,
    customer_email: &'a str,
    organisation: Option<&'a str>,
    helpdesk_name: &'a str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Acknowledgement {
    pub to: String,
    pub to_name: Option<String>,
    pub from: String,
    pub from_name: String,
    pub subject: String,
    pub body: String,
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "ack", rename_all = "kebab-case")]
pub enum AckDecision {
    Queue(Acknowledgement),
    Skip { reason: String },
}

impl AckDecision {
    fn skip(reason: impl Into<String>) -> Self {
        AckDecision::Skip { reason: reason.into() }
    }

    /// `queued`, or why no acknowledgement was queued: the ticket's `ack` field.
    pub fn summary(&self) -> String {
        match self {
            AckDecision::Queue(_) => "queued".to_owned(),
            AckDecision::Skip { reason } => reason.clone(),
        }
    }
}

/// Whom an acknowledgement would go to: Reply-To when present, else From.
pub fn recipient(inbound: &Inbound) -> Option<Sender> {
    [&inbound.reply_to, &inbound.from]
        .into_iter()
        .flatten()
        .find_map(|m| Some(Sender { email: address::normalise(&m.address)?, name: m.name.clone() }))
}

/// Everything an acknowledgement decision looks at for one new ticket.
pub struct AckInput<'a> {
    pub inbound: &'a Inbound,
    pub classification: &'a [Kind],
    pub ticket_number: &'a str,
    pub tag: &'a str,
    pub helpdesk_address: &'a str,
    pub organisation: Option<&'a str>,
    pub own_addresses: &'a [String],
    pub internal_domains: &'a [String],
    /// Acknowledgements queued to the same recipient in the last 24 hours.
    pub recent_to_recipient: u32,
}

pub fn decide(input: &AckInput, policy: &AckPolicy) -> AckDecision {
    if !policy.enabled {
        return AckDecision::skip("acknowledgements are disabled");
    }
    if let Some(kind) = input.classification.first() {
        return AckDecision::skip(kind.as_str());
    }
    let Some(to) = recipient(input.inbound) else {
        return AckDecision::skip("no recipient address");
    };
    if input.own_addresses.contains(&to.email) {
        return AckDecision::skip("recipient is one of our own addresses");
    }
    let domain = address::domain_of(&to.email);
    if input.internal_domains.iter().any(|d| address::is_within(domain, d)) {
        return AckDecision::skip("recipient is internal");
    }
    if input.recent_to_recipient >= policy.max_per_sender_per_day {
        return AckDecision::skip(format!("per-sender limit reached ({} in 24 h)", policy.max_per_sender_per_day));
    }
    match build(input, policy, to) {
        Ok(ack) => AckDecision::Queue(ack),
        Err(e) => AckDecision::skip(format!("template failed: {e}")),
    }
}

fn build(input: &AckInput, policy: &AckPolicy, to: Sender) -> Result<Acknowledgement, String> {
    let subject = header_safe(&input.inbound.subject, 200);
    let to_name = to.name.as_deref().map(|n| header_safe(n, 100)).filter(|n| !n.is_empty());
    let body = policy.template.render(&TemplateContext {
        ticket_number: input.ticket_number,
        tag: input.tag,
        subject: &subject,
        customer_name: to_name.as_deref(),
        customer_email: &to.email,
        organisation: input.organisation,
        helpdesk_name: &policy.helpdesk_name,
    })?;
    let in_reply_to = input.inbound.message_id.clone().filter(|id| header_safe_id(id));
    let safe: Vec<&String> = input.inbound.references.iter().filter(|id| header_safe_id(id)).collect();
    let mut references: Vec<String> = safe[safe.len().saturating_sub(10)..].iter().map(|id| id.to_string()).collect();
    references.extend(in_reply_to.clone().filter(|id| !references.contains(id)));
    let helpdesk_domain = address::domain_of(input.helpdesk_address);
    Ok(Acknowledgement {
        to: to.email,
        to_name,
        from: input.helpdesk_address.to_owned(),
        from_name: policy.from_name.clone(),
        subject: if subject.is_empty() { input.tag.to_owned() } else { format!("{} {subject}", input.tag) },
        body,
        message_id: format!("ack.{}@{helpdesk_domain}", input.ticket_number),
        in_reply_to,
        references,
    })
}

/// Text from a mail, made safe for an outgoing header: one line, no control
/// characters, bounded length. Non-ASCII is left to the SMTP adapter to encode.
pub fn header_safe(text: &str, max_chars: usize) -> String {
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    clean.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(max_chars).collect()
}

/// A message-id that can be written inside `<…>` as is.
fn header_safe_id(id: &str) -> bool {
    id.len() <= 250 && id.contains('@') && id.bytes().all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::parse::parse;

    fn policy() -> AckPolicy {
        AckPolicy {
            enabled: true,
            from_name: "ACME Support".to_owned(),
            helpdesk_name: "ACME Support".to_owned(),
            max_per_sender_per_day: 2,
            template: AckTemplate::new("Hi {{ customer_name or customer_email }}, {{ tag }}: {{ subject }}".to_owned())
                .unwrap(),
        }
    }

    fn decide_for(headers: &str, classification: &[Kind], recent: u32, policy: &AckPolicy) -> AckDecision {
        let raw = format!("{headers}\r\n\r\nbody");
        let inbound = parse(raw.as_bytes(), "X-Postdesk-Loop").unwrap();
        let own = vec!["support@helpdesk.example".to_owned()];
        let internal = vec!["helpdesk.example".to_owned()];
        decide(
            &AckInput {
                inbound: &inbound,
                classification,
                ticket_number: "2026112310000017",
                tag: "[Ticket#2026112310000017]",
                helpdesk_address: "support@helpdesk.example",
                organisation: None,
                own_addresses: &own,
                internal_domains: &internal,
                recent_to_recipient: recent,
            },
            policy,
        )
    }

    fn reason(d: AckDecision) -> String {
        d.summary()
    }

    #[test]
    fn when_not_to_acknowledge() {
        let customer = "From: Alice <alice@acme.com>\r\nSubject: Help";
        let disabled = AckPolicy { enabled: false, ..policy() };
        assert_eq!(reason(decide_for(customer, &[], 0, &policy())), "queued");
        assert_eq!(reason(decide_for(customer, &[], 0, &disabled)), "acknowledgements are disabled");
        assert_eq!(reason(decide_for(customer, &[Kind::Bulk], 0, &policy())), "bulk");
        assert_eq!(reason(decide_for(customer, &[Kind::Bounce, Kind::Spam], 0, &policy())), "bounce");
        assert_eq!(reason(decide_for(customer, &[], 2, &policy())), "per-sender limit reached (2 in 24 h)");
        assert_eq!(reason(decide_for(customer, &[], 1, &policy())), "queued");
        assert_eq!(
            reason(decide_for("From: x@acme.com\r\nReply-To: support@helpdesk.example", &[], 0, &policy())),
            "recipient is one of our own addresses"
        );
        assert_eq!(reason(decide_for("From: agent@it.helpdesk.example", &[], 0, &policy())), "recipient is internal");
        assert_eq!(reason(decide_for("From: nobody", &[], 0, &policy())), "no recipient address");
    }

    #[test]
    fn the_acknowledgement_mail() {
        let headers = "From: Web <no-reply@forms.acme.com>\r\nReply-To: =?UTF-8?Q?J=C3=BCdy?= <Judy@Umbrella.com>\r\n\
                       Subject: Cannot\r\n log in\r\nMessage-ID: <m1@acme.com>\r\nReferences: <r0@acme.com> <bad id>";
        let AckDecision::Queue(ack) = decide_for(headers, &[], 0, &policy()) else { panic!("expected an ack") };
        assert_eq!(ack.to, "judy@umbrella.com");
        assert_eq!(ack.to_name.as_deref(), Some("Jüdy"));
        assert_eq!(ack.from, "support@helpdesk.example");
        assert_eq!(ack.subject, "[Ticket#2026112310000017] Cannot log in");
        assert_eq!(ack.body, "Hi Jüdy, [Ticket#2026112310000017]: Cannot log in");
        assert_eq!(ack.message_id, "ack.2026112310000017@helpdesk.example");
        assert_eq!(ack.in_reply_to.as_deref(), Some("m1@acme.com"));
        assert_eq!(ack.references, vec!["r0@acme.com", "m1@acme.com"]);
    }

    #[test]
    fn header_values_are_made_safe() {
        assert_eq!(header_safe("a\r\nBcc: evil@x.example", 100), "a Bcc: evil@x.example");
        assert_eq!(header_safe("tab\there\u{7f}", 100), "tab here");
        assert_eq!(header_safe(&"x".repeat(500), 200).len(), 200);
    }

    #[test]
    fn broken_templates_are_refused() {
        assert!(AckTemplate::new("{% if %}".to_owned()).is_err());
    }
}
