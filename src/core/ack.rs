//! Acknowledgements as data: whether a new ticket gets one, and the mail itself
//! (recipient, tagged subject, rendered body, threading and anti-loop headers). Pure:
//! the store counts recent acknowledgements; the SMTP adapter only delivers.

use serde::Serialize;

use super::address;
use super::classify::Kind;
use super::parse::Inbound;
use super::resolve::Sender;
use super::trust::{self, Authentication};

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
    /// Per mailbox (plus-tags, and the dots of providers that ignore them, folded).
    pub max_per_sender_per_day: u32,
    /// Per recipient domain: many mailboxes of one domain are one victim too. Free-mail
    /// domains are counted per mailbox only.
    pub max_per_domain_per_day: u32,
    /// Whether the template may name the customer's organisation: whoever can send
    /// mail from an address would otherwise learn which organisation it is filed under.
    pub show_organisation: bool,
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

/// What an outgoing mail is: the acknowledgement of a new ticket (counted by the
/// acknowledgement caps), an agent's reply (written by a person), or a portal mail that
/// belongs to no ticket: a sign-in link, or the link that confirms a support request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    Ack,
    Reply,
    SignIn,
    Confirm,
}

impl MailKind {
    const ALL: [MailKind; 4] = [MailKind::Ack, MailKind::Reply, MailKind::SignIn, MailKind::Confirm];

    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Ack => "ack",
            MailKind::Reply => "reply",
            MailKind::SignIn => "sign_in",
            MailKind::Confirm => "confirm",
        }
    }

    pub fn parse(text: &str) -> Option<MailKind> {
        MailKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// What the mail is, for log lines.
    pub fn noun(self) -> &'static str {
        match self {
            MailKind::Ack => "acknowledgement",
            MailKind::Reply => "reply",
            MailKind::SignIn => "sign-in link",
            MailKind::Confirm => "confirmation link",
        }
    }

    /// Its RFC 3834 `Auto-Submitted` value: none for a person's reply.
    pub fn auto_submitted(self) -> Option<&'static str> {
        match self {
            MailKind::Ack => Some("auto-replied"),
            MailKind::Reply => None,
            MailKind::SignIn | MailKind::Confirm => Some("auto-generated"),
        }
    }
}

/// An outgoing mail of the outbox (an acknowledgement or, by `kind`, an agent's reply).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Acknowledgement {
    pub kind: MailKind,
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

    pub fn state(&self) -> AckState {
        match self {
            AckDecision::Queue(_) => AckState::Queued,
            AckDecision::Skip { reason } => AckState::Skipped(reason.clone()),
        }
    }

    /// `queued`, or why no acknowledgement was queued: the ticket's `ack` field.
    pub fn summary(&self) -> String {
        self.state().as_str().to_owned()
    }
}

/// What became of a new ticket's acknowledgement: queued, or not and why. Written as
/// `queued` or the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckState {
    Queued,
    Skipped(String),
}

impl AckState {
    pub fn as_str(&self) -> &str {
        match self {
            AckState::Queued => "queued",
            AckState::Skipped(reason) => reason,
        }
    }
}

impl Serialize for AckState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The key the per-sender cap counts by: one mailbox however it is spelled. Plus-tags
/// are folded (`victim+1@x` is `victim@x`), and for providers that ignore dots in the
/// local part, the dots too (`j.doe@gmail.com` is `jdoe@gmail.com`).
pub fn mailbox_key(email: &str) -> String {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return email.to_owned();
    };
    let local = local.split('+').next().unwrap_or(local);
    match domain {
        "gmail.com" | "googlemail.com" => format!("{}@gmail.com", local.replace('.', "")),
        _ => format!("{local}@{domain}"),
    }
}

/// Everything an acknowledgement decision looks at for one new ticket.
pub struct AckInput<'a> {
    pub inbound: &'a Inbound,
    pub classification: &'a [Kind],
    /// The customer address the ticket records: the only address an acknowledgement
    /// may go to.
    pub to: Option<&'a Sender>,
    /// The sender is an automated one (no-reply, MAILER-DAEMON, postmaster).
    pub automated_sender: bool,
    pub authentication: Authentication,
    pub ticket_number: &'a str,
    pub tag: &'a str,
    pub helpdesk_address: &'a str,
    pub organisation: Option<&'a str>,
    pub own_addresses: &'a [String],
    pub internal_domains: &'a [String],
    /// Configured free-mail domains beside the built-in list.
    pub extra_free_mail: &'a [String],
    /// Acknowledgements queued to the same mailbox (`mailbox_key`) in the last 24 hours.
    pub recent_to_recipient: u32,
    /// Acknowledgements queued to the recipient's domain in the last 24 hours.
    pub recent_to_domain: u32,
    /// Randomness for the Message-ID, from the caller (the core has none of its own).
    pub random: [u8; 16],
}

pub fn decide(input: &AckInput, policy: &AckPolicy) -> AckDecision {
    if !policy.enabled {
        return AckDecision::skip("acknowledgements are disabled");
    }
    if let Some(kind) = input.classification.first() {
        return AckDecision::skip(kind.as_str());
    }
    if input.authentication == Authentication::Fail {
        return AckDecision::skip("failed DMARC");
    }
    let Some(to) = input.to else {
        return AckDecision::skip("no recipient address");
    };
    if input.automated_sender {
        return AckDecision::skip("automated sender");
    }
    if input.own_addresses.contains(&to.email) {
        return AckDecision::skip("recipient is one of our own addresses");
    }
    let domain = address::domain_of(&to.email);
    if input.internal_domains.iter().any(|d| address::is_within(domain, d)) {
        return AckDecision::skip("recipient is internal");
    }
    if !same_domain_as_sender(input.inbound, domain) {
        return AckDecision::skip("recipient's domain is not the sender's");
    }
    if input.recent_to_recipient >= policy.max_per_sender_per_day {
        return AckDecision::skip(format!("per-sender limit reached ({} in 24 h)", policy.max_per_sender_per_day));
    }
    // A free-mail domain is millions of unrelated people, not one organisation to protect.
    if input.recent_to_domain >= policy.max_per_domain_per_day && !address::is_free_mail(domain, input.extra_free_mail)
    {
        return AckDecision::skip(format!("per-domain limit reached ({} in 24 h)", policy.max_per_domain_per_day));
    }
    match build(input, policy, to.clone()) {
        Ok(ack) => AckDecision::Queue(ack),
        Err(e) => AckDecision::skip(format!("template failed: {e}")),
    }
}

/// Whether `domain` is the domain (registrable domain) of the message's author (From,
/// else Sender): an acknowledgement never goes to a third party a sender names.
fn same_domain_as_sender(inbound: &Inbound, domain: &str) -> bool {
    let author = [&inbound.from, &inbound.sender].into_iter().flatten().find_map(|m| address::normalise(&m.address));
    let Some(author) = author else {
        return false;
    };
    let org = |d: &str| address::registrable_domain(d).unwrap_or_else(|| d.to_owned());
    org(address::domain_of(&author)) == org(domain)
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
        organisation: input.organisation.filter(|_| policy.show_organisation),
        helpdesk_name: &policy.helpdesk_name,
    })?;
    let in_reply_to = input.inbound.message_id.clone().filter(|id| header_safe_id(id));
    let safe: Vec<&String> = input.inbound.references.iter().filter(|id| header_safe_id(id)).collect();
    let mut references: Vec<String> = safe[safe.len().saturating_sub(10)..].iter().map(|id| id.to_string()).collect();
    references.extend(in_reply_to.clone().filter(|id| !references.contains(id)));
    let helpdesk_domain = address::domain_of(input.helpdesk_address);
    Ok(Acknowledgement {
        kind: MailKind::Ack,
        to: to.email,
        to_name,
        from: input.helpdesk_address.to_owned(),
        from_name: policy.from_name.clone(),
        subject: if subject.is_empty() { input.tag.to_owned() } else { format!("{} {subject}", input.tag) },
        body,
        message_id: trust::our_message_id(input.ticket_number, input.random, helpdesk_domain),
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
pub(crate) fn header_safe_id(id: &str) -> bool {
    id.len() <= 250 && id.contains('@') && id.bytes().all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::parse::parse;
    use crate::core::resolve::AddressSource;

    fn policy() -> AckPolicy {
        AckPolicy {
            enabled: true,
            from_name: "ACME Support".to_owned(),
            helpdesk_name: "ACME Support".to_owned(),
            max_per_sender_per_day: 2,
            max_per_domain_per_day: 5,
            show_organisation: false,
            template: AckTemplate::new(
                "Hi {{ customer_name or customer_email }}, {{ tag }}: {{ subject }}{% if organisation %} \
                 for {{ organisation }}{% endif %}"
                    .to_owned(),
            )
            .unwrap(),
        }
    }

    struct Case<'a> {
        headers: &'a str,
        prefer: AddressSource,
        classification: &'a [Kind],
        authentication: Authentication,
        recent: (u32, u32),
    }

    fn case(headers: &str) -> Case<'_> {
        Case {
            headers,
            prefer: AddressSource::From,
            classification: &[],
            authentication: Authentication::Unknown,
            recent: (0, 0),
        }
    }

    fn run(c: &Case, policy: &AckPolicy) -> AckDecision {
        let raw = format!("{}\r\n\r\nbody", c.headers);
        let inbound = parse(raw.as_bytes(), "X-Postdesk-Loop").unwrap();
        let own = vec!["support@helpdesk.example".to_owned()];
        let internal = vec!["helpdesk.example".to_owned()];
        let to = crate::core::resolve::sender(&inbound, c.prefer);
        decide(
            &AckInput {
                inbound: &inbound,
                classification: c.classification,
                to: to.as_ref(),
                automated_sender: to.as_ref().is_some_and(|s| crate::core::resolve::is_automated_sender(&s.email)),
                authentication: c.authentication,
                ticket_number: "2026112310000017",
                tag: "[Ticket#2026112310000017]",
                helpdesk_address: "support@helpdesk.example",
                organisation: Some("ACME Widgets"),
                own_addresses: &own,
                internal_domains: &internal,
                extra_free_mail: &[],
                recent_to_recipient: c.recent.0,
                recent_to_domain: c.recent.1,
                random: [7; 16],
            },
            policy,
        )
    }

    fn decide_for(headers: &str, classification: &[Kind], recent: u32, policy: &AckPolicy) -> AckDecision {
        run(&Case { classification, recent: (recent, recent), ..case(headers) }, policy)
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
            reason(decide_for("From: support@helpdesk.example", &[], 0, &policy())),
            "recipient is one of our own addresses"
        );
        assert_eq!(reason(decide_for("From: agent@it.helpdesk.example", &[], 0, &policy())), "recipient is internal");
        assert_eq!(reason(decide_for("From: nobody", &[], 0, &policy())), "no recipient address");
    }

    #[test]
    fn never_a_relay() {
        let cases: &[(Case, &str)] = &[
            // The acknowledgement goes to the customer address (From by default), never
            // to a Reply-To of another domain the sender names.
            (case("From: alice@acme.com\r\nReply-To: victim@other.example"), "queued"),
            (
                Case { prefer: AddressSource::ReplyTo, ..case("From: x@acme.com\r\nReply-To: victim@other.example") },
                "recipient's domain is not the sender's",
            ),
            (
                Case { prefer: AddressSource::ReplyTo, ..case("From: web@forms.acme.com\r\nReply-To: bob@acme.com") },
                "queued",
            ),
            (case("From: no-reply@forms.acme.com"), "automated sender"),
            (Case { authentication: Authentication::Fail, ..case("From: alice@acme.com") }, "failed DMARC"),
            (Case { authentication: Authentication::Pass, ..case("From: alice@acme.com") }, "queued"),
            (Case { recent: (1, 4), ..case("From: alice@acme.com") }, "queued"),
            (Case { recent: (2, 2), ..case("From: alice@acme.com") }, "per-sender limit reached (2 in 24 h)"),
            (Case { recent: (0, 5), ..case("From: alice@acme.com") }, "per-domain limit reached (5 in 24 h)"),
            (Case { recent: (0, 5), ..case("From: alice@gmail.com") }, "queued"),
        ];
        for (c, want) in cases {
            assert_eq!(reason(run(c, &policy())), *want, "{:?} {:?}", c.headers, c.prefer);
        }
        let AckDecision::Queue(ack) = run(&case("From: alice@acme.com\r\nReply-To: victim@other.example"), &policy())
        else {
            panic!("expected an ack")
        };
        assert_eq!(ack.to, "alice@acme.com");
    }

    #[test]
    fn the_caps_count_one_mailbox_however_it_is_spelled() {
        let cases = [
            ("victim+1@acme.com", "victim@acme.com"),
            ("victim+a+b@acme.com", "victim@acme.com"),
            ("j.doe+x@gmail.com", "jdoe@gmail.com"),
            ("J.Doe@googlemail.com".to_lowercase().leak(), "jdoe@gmail.com"),
            ("j.doe@acme.com", "j.doe@acme.com"),
        ];
        for (email, want) in cases {
            assert_eq!(mailbox_key(email), want, "{email}");
        }
    }

    #[test]
    fn the_organisation_is_shown_only_when_configured() {
        let body = |policy: &AckPolicy| match run(&case("From: alice@acme.com\r\nSubject: Help"), policy) {
            AckDecision::Queue(ack) => ack.body,
            other => panic!("{other:?}"),
        };
        assert_eq!(body(&policy()), "Hi alice@acme.com, [Ticket#2026112310000017]: Help");
        let shown = AckPolicy { show_organisation: true, ..policy() };
        assert_eq!(body(&shown), "Hi alice@acme.com, [Ticket#2026112310000017]: Help for ACME Widgets");
    }

    #[test]
    fn the_acknowledgement_mail() {
        let headers = "From: Web <no-reply@forms.acme.com>\r\nReply-To: =?UTF-8?Q?J=C3=BCdy?= <Judy@Umbrella.com>\r\n\
                       Subject: Cannot\r\n log in\r\nMessage-ID: <m1@acme.com>\r\nReferences: <r0@acme.com> <bad id>";
        let webform = Case { prefer: AddressSource::ReplyTo, ..case(headers) };
        assert_eq!(reason(run(&webform, &policy())), "recipient's domain is not the sender's");
        let headers = &headers.replace("Judy@Umbrella.com", "Judy@Acme.com");
        let AckDecision::Queue(ack) = run(&Case { prefer: AddressSource::ReplyTo, ..case(headers) }, &policy()) else {
            panic!("expected an ack")
        };
        assert_eq!(ack.to, "judy@acme.com");
        assert_eq!(ack.to_name.as_deref(), Some("Jüdy"));
        assert_eq!(ack.from, "support@helpdesk.example");
        assert_eq!(ack.subject, "[Ticket#2026112310000017] Cannot log in");
        assert_eq!(ack.body, "Hi Jüdy, [Ticket#2026112310000017]: Cannot log in");
        assert_eq!(ack.message_id, trust::our_message_id("2026112310000017", [7; 16], "helpdesk.example"));
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
