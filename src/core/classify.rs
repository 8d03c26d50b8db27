//! Classify: what kind of mail an inbound message is (auto-reply, bulk, bounce, feedback
//! report, cloud delivery notification, list-manager notice, no-reply sender, loop, our
//! own, spam). Pure and table-driven: each rule is a row below with its own test row. A
//! classification only ever withholds an acknowledgement; it never drops a message.

use serde::Serialize;

use super::address;
use super::parse::Inbound;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// RFC 3834 `Auto-Submitted`, `X-Autoreply`, `X-Autorespond`, `Precedence: auto_reply`,
    /// or a subject that says so in one of the common languages.
    AutoReply,
    /// `X-Auto-Response-Suppress`: the sender asked not to be answered automatically.
    AutoResponseSuppressed,
    /// `Precedence: bulk|junk|list`, `List-Id`, `List-Unsubscribe`.
    Bulk,
    /// `multipart/report`, a null envelope sender, MAILER-DAEMON or postmaster.
    Bounce,
    /// An abuse feedback report (ARF, RFC 5965), in `multipart/report` or `multipart/mixed`.
    FeedbackReport,
    /// A bounce, complaint or delivery notification of a cloud mail service, as JSON.
    ServiceNotification,
    /// A mailing-list manager's notice: moderation, non-member, loop alert, digest, or
    /// sent from a list's `-request`/`-owner`/`-bounces` address.
    ListNotice,
    /// A `no-reply`/`noreply`/`do-not-reply` sender: nobody reads an answer.
    NoReply,
    /// Carries our own loop header: it already went through a postdesk.
    Loop,
    /// Sent from one of our own helpdesk addresses.
    OwnAddress,
    /// `X-Spam-Flag: YES`.
    Spam,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AutoReply => "auto-reply",
            Kind::AutoResponseSuppressed => "auto-response-suppressed",
            Kind::Bulk => "bulk",
            Kind::Bounce => "bounce",
            Kind::FeedbackReport => "feedback-report",
            Kind::ServiceNotification => "service-notification",
            Kind::ListNotice => "list-notice",
            Kind::NoReply => "no-reply",
            Kind::Loop => "loop",
            Kind::OwnAddress => "own-address",
            Kind::Spam => "spam",
        }
    }
}

/// Subjects of auto-replies, lower-case: the subject starts with one of these, followed by
/// `:` (or `：`) or nothing. "Out of office until Monday" is a person writing.
const AUTO_REPLY_SUBJECTS: &[&str] = &[
    "auto reply",
    "auto-reply",
    "autoreply",
    "automatic reply",
    "auto response",
    "auto-response",
    "automatic response",
    "automated reply",
    "auto generated",
    "auto-generated",
    "automatically generated",
    "out of office",
    "out of office autoreply",
    "out of office auto reply",
    "out of the office",
    "abwesenheitsnotiz",
    "automatische antwort",
    "réponse automatique",
    "reponse automatique",
    "absence du bureau",
    "risposta automatica",
    "respuesta automática",
    "respuesta automatica",
    "resposta automática",
    "resposta automatica",
    "automatisch antwoord",
    "autosvar",
    "automaattinen vastaus",
    "odpowiedź automatyczna",
    "automatická odpověď",
    "автоматический ответ",
    "автоответ",
    "otomatik yanıt",
    "αυτόματη απάντηση",
    "自動応答",
    "自動返信",
    "自动回复",
    "自動回覆",
    "자동 회신",
    "자동 응답",
];

/// Parts of subjects that list managers (Mailman, Sympa, ezmlm, listserv) use for notices.
const LIST_NOTICE_SUBJECTS: &[&str] = &[
    "awaits moderator approval",
    "non-member submission",
    "posting by non-member",
    "non-member post",
    "mail loop",
    "loop alert",
    "message rejected by list",
    " digest, vol ",
    " digest, volume ",
];

/// Local parts that list managers send from: `list-request@`, `owner-list@` …
const LIST_MANAGER_SUFFIXES: &[&str] = &["-request", "-owner", "-bounces"];
const LIST_MANAGER_PREFIXES: &[&str] = &["owner-"];

/// Local parts (separators `-_.` removed) of senders that read no answers.
const NO_REPLY_LOCAL_PARTS: &[&str] = &["noreply", "donotreply", "dontreply", "noreplies", "noresponse"];

/// JSON fields and values of the delivery notifications cloud mail services send (SES,
/// SendGrid, Postmark, Mailgun, …), lower-case.
const NOTIFICATION_FIELDS: &[&str] = &["notificationtype", "eventtype", "recordtype", "event", "type"];
const NOTIFICATION_VALUES: &[&str] =
    &["bounce", "complaint", "delivery", "spamcomplaint", "spamreport", "dropped", "failed", "deferred"];

/// Every kind that applies, in a fixed order; empty for a message written by a person.
pub fn classify(inbound: &Inbound, own_addresses: &[String]) -> Vec<Kind> {
    let s = &inbound.signals;
    let from = inbound.from.as_ref().map(|m| m.address.as_str()).unwrap_or("");
    let from_normalised = address::normalise(from);
    let local = local_part(from);
    let auto_submitted = s.auto_submitted.as_deref().is_some_and(|v| !v.starts_with("no"));
    let precedence = s.precedence.as_deref().unwrap_or("");
    let subject = subject_key(&inbound.subject);
    let checks = [
        (
            Kind::AutoReply,
            auto_submitted
                || s.x_autoreply
                || s.x_autorespond
                || precedence == "auto_reply"
                || AUTO_REPLY_SUBJECTS.iter().any(|p| subject_is(&subject, p)),
        ),
        (Kind::AutoResponseSuppressed, s.x_auto_response_suppress.as_deref().is_some_and(|v| !v.is_empty())),
        (Kind::Bulk, matches!(precedence, "bulk" | "junk" | "list") || s.list_id || s.list_unsubscribe),
        (Kind::Bounce, s.report || s.report_in_body || s.null_return_path || is_daemon_sender(&local)),
        (Kind::FeedbackReport, s.part_types.iter().any(|t| t == "message/feedback-report")),
        (Kind::ServiceNotification, is_json_notification(&inbound.text_body)),
        (
            Kind::ListNotice,
            s.list_administrivia
                || LIST_NOTICE_SUBJECTS.iter().any(|p| subject.contains(p))
                || LIST_MANAGER_SUFFIXES.iter().any(|p| local.ends_with(p))
                || LIST_MANAGER_PREFIXES.iter().any(|p| local.starts_with(p)),
        ),
        (Kind::NoReply, is_no_reply(&local)),
        (Kind::Loop, !s.loop_header.is_empty()),
        (Kind::OwnAddress, from_normalised.is_some_and(|f| own_addresses.contains(&f))),
        (Kind::Spam, s.spam_flag),
    ];
    checks.into_iter().filter(|(_, applies)| *applies).map(|(kind, _)| kind).collect()
}

/// The local part of an address, lower-case, without a `+tag`.
fn local_part(address: &str) -> String {
    let local = address.rsplit_once('@').map_or(address, |(l, _)| l).trim().to_lowercase();
    local.split('+').next().unwrap_or("").to_owned()
}

/// A subject lower-case, white space collapsed, fullwidth colons as `:`, bounded.
fn subject_key(subject: &str) -> String {
    let short: String = subject.chars().take(200).map(|c| if c == '：' { ':' } else { c }).collect();
    format!(" {}", short.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase())
}

/// Whether the subject (as `subject_key` made it) is `phrase`, starts with it and `:`, or
/// starts with it in brackets ("[Auto generated] Your report").
fn subject_is(subject: &str, phrase: &str) -> bool {
    let subject = &subject[1..];
    let labelled =
        subject.strip_prefix(phrase).is_some_and(|rest| rest.is_empty() || rest.trim_start().starts_with(':'));
    let bracketed = subject.strip_prefix('[').and_then(|r| r.strip_prefix(phrase)).is_some_and(|r| r.starts_with(']'));
    labelled || bracketed
}

/// MAILER-DAEMON and postmaster send bounces, with or without a domain.
fn is_daemon_sender(local: &str) -> bool {
    matches!(local, "mailer-daemon" | "postmaster" | "mail-daemon")
}

fn is_no_reply(local: &str) -> bool {
    let squeezed: String = local.chars().filter(|c| !"-_.".contains(*c)).collect();
    NO_REPLY_LOCAL_PARTS.iter().any(|p| squeezed == *p || squeezed.starts_with(p) || squeezed.ends_with(p))
}

/// A text body that is a JSON delivery notification: it starts with `{` and has a field
/// like `"notificationType": "Bounce"`. Only the first 64 KiB are looked at.
fn is_json_notification(text: &str) -> bool {
    let text = text.trim_start();
    if !text.starts_with('{') {
        return false;
    }
    let end = (0..=text.len().min(64 * 1024)).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    let lower = text[..end].to_lowercase();
    NOTIFICATION_FIELDS.iter().any(|field| {
        let key = format!("\"{field}\"");
        lower.match_indices(&key).any(|(at, _)| {
            let rest = lower[at + key.len()..].trim_start();
            let Some(rest) = rest.strip_prefix(':') else { return false };
            let Some(value) = rest.trim_start().strip_prefix('"') else { return false };
            let value = &value[..value.find('"').unwrap_or(value.len())];
            NOTIFICATION_VALUES.contains(&value)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::parse::parse;

    fn kinds(headers: &str) -> Vec<Kind> {
        let raw = if headers.contains("\r\n\r\n") {
            headers.to_owned()
        } else if headers.contains("Subject:") {
            format!("{headers}\r\n\r\nbody\r\n")
        } else {
            format!("{headers}\r\nSubject: s\r\n\r\nbody\r\n")
        };
        let inbound = parse(raw.as_bytes(), "X-Postdesk-Loop").expect("parses");
        classify(&inbound, &["support@helpdesk.example".to_owned()])
    }

    #[test]
    fn table() {
        use Kind::*;
        let cases: &[(&str, &[Kind])] = &[
            ("From: a@acme.example", &[]),
            ("From: a@acme.example\r\nAuto-Submitted: no", &[]),
            ("From: a@acme.example\r\nAuto-Submitted: auto-replied", &[AutoReply]),
            ("From: a@acme.example\r\nAuto-Submitted: auto-generated", &[AutoReply]),
            ("From: a@acme.example\r\nX-Autoreply: yes", &[AutoReply]),
            ("From: a@acme.example\r\nX-Autorespond: yes", &[AutoReply]),
            ("From: a@acme.example\r\nPrecedence: auto_reply", &[AutoReply]),
            ("From: a@acme.example\r\nX-Auto-Response-Suppress: All", &[AutoResponseSuppressed]),
            ("From: a@acme.example\r\nPrecedence: bulk", &[Bulk]),
            ("From: a@acme.example\r\nPrecedence: junk", &[Bulk]),
            ("From: a@acme.example\r\nPrecedence: list", &[Bulk]),
            ("From: a@acme.example\r\nList-Id: <x.acme.example>", &[Bulk]),
            ("From: a@acme.example\r\nList-Unsubscribe: <mailto:u@acme.example>", &[Bulk]),
            ("From: MAILER-DAEMON@mx.acme.example", &[Bounce]),
            ("From: Mail Delivery Subsystem <mailer-daemon>", &[Bounce]),
            ("From: postmaster@acme.example", &[Bounce]),
            ("From: a@acme.example\r\nReturn-Path: <>", &[Bounce]),
            ("From: a@acme.example\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b", &[Bounce]),
            (
                "From: a@acme.example\r\nSubject: Fwd: Returned mail\r\n\r\n> Final-Recipient: rfc822; b@x.example\r\n> Status: 5.1.1",
                &[Bounce],
            ),
            ("From: a@acme.example\r\nX-Postdesk-Loop: support@helpdesk.example", &[Loop]),
            ("From: Support <SUPPORT@helpdesk.example>", &[OwnAddress]),
            ("From: a@acme.example\r\nX-Spam-Flag: YES", &[Spam]),
            ("From: a@acme.example\r\nX-Spam-Flag: NO", &[]),
            ("From: a@acme.example\r\nSubject: Out of office until Monday", &[]),
            ("From: a@acme.example\r\nSubject: [AUTO GENERATED] Weekly report", &[AutoReply]),
            ("From: a@acme.example\r\nSubject: The auto generated report is wrong", &[]),
            ("From: a@acme.example\r\nSubject: Re: automatic reply settings", &[]),
            ("From: a@acme.example\r\nSubject: Autoreply does not work", &[]),
            // Auto-replies that say so only in the subject, one row per phrase family.
            ("From: a@acme.example\r\nSubject: Auto reply: Printer", &[AutoReply]),
            ("From: a@acme.example\r\nSubject: AutoReply: Printer", &[AutoReply]),
            ("From: a@acme.example\r\nSubject: Automatic reply: Printer", &[AutoReply]),
            ("From: a@acme.example\r\nSubject: Out of Office: Printer", &[AutoReply]),
            ("From: a@acme.example\r\nSubject: Out of Office AutoReply: Printer", &[AutoReply]),
            ("From: a@acme.example\r\nSubject: Out of Office", &[AutoReply]),
            ("From: a@acme.example\r\nSubject: Abwesenheitsnotiz: Drucker", &[AutoReply]),
            ("From: a@acme.example\r\nSubject: Automatische Antwort: Drucker", &[AutoReply]),
            ("From: a@acme.example\r\nSubject: =?UTF-8?Q?R=C3=A9ponse_automatique_:_Imprimante?=", &[AutoReply]),
            ("From: a@acme.example\r\nSubject: Risposta automatica: Stampante", &[AutoReply]),
            ("From: a@acme.example\r\nSubject: =?UTF-8?Q?Respuesta_autom=C3=A1tica:_Impresora?=", &[AutoReply]),
            ("From: a@acme.example\r\nSubject: =?UTF-8?B?6Ieq5YuV5b+c562U77ya44OX44Oq44Oz44K/?=", &[AutoReply]),
            ("From: a@acme.example\r\nSubject: =?UTF-8?B?6Ieq5Yqo5Zue5aSNOiDmiZPljbDmnLo=?=", &[AutoReply]),
            ("From: a@acme.example\r\nSubject: =?UTF-8?B?0JDQstGC0L7QvtGC0LLQtdGCOiDQn9GA0LjQvdGC0LXRgA==?=", &[AutoReply]),
            ("From: a@acme.example\r\nSubject: Automatisch antwoord: Printer", &[AutoReply]),
            ("From: a@acme.example\r\nSubject: Autosvar: Skrivare", &[AutoReply]),
            // Senders that read no answers.
            ("From: no-reply@acme.example", &[NoReply]),
            ("From: NoReply@acme.example", &[NoReply]),
            ("From: do_not_reply@acme.example", &[NoReply]),
            ("From: donotreply+billing@acme.example", &[NoReply]),
            ("From: alerts-noreply@acme.example", &[NoReply]),
            ("From: nora.reply@acme.example", &[]),
            // Abuse feedback reports, also inside multipart/mixed.
            (
                "From: abuse@isp.example\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
                 Content-Type: text/plain\r\n\r\nreport\r\n--b\r\nContent-Type: message/feedback-report\r\n\r\n\
                 Feedback-Type: abuse\r\n--b--\r\n",
                &[FeedbackReport],
            ),
            // Cloud mail services' JSON notifications.
            (
                "From: ses@notify.example\r\n\r\n{\"notificationType\": \"Bounce\", \"bounce\": {}}",
                &[ServiceNotification],
            ),
            ("From: hooks@mail.example\r\n\r\n{\"RecordType\":\"SpamComplaint\"}", &[ServiceNotification]),
            ("From: dev@acme.example\r\n\r\n{\"type\": \"feature\", \"text\": \"bounce\"}", &[]),
            // Mailing-list managers.
            ("From: users-request@lists.example", &[ListNotice]),
            ("From: users-owner@lists.example", &[ListNotice]),
            ("From: owner-users@lists.example", &[ListNotice]),
            ("From: users-bounces@lists.example", &[ListNotice]),
            ("From: it-admin@acme.example", &[]),
            ("From: a@lists.example\r\nX-List-Administrivia: yes", &[ListNotice]),
            ("From: a@lists.example\r\nSubject: Your message to Users awaits moderator approval", &[ListNotice]),
            ("From: a@lists.example\r\nSubject: Users Digest, Vol 42, Issue 7", &[ListNotice]),
            ("From: a@lists.example\r\nSubject: Posting by non-member to users rejected", &[ListNotice]),
            ("From: a@lists.example\r\nSubject: Mail loop detected", &[ListNotice]),
            ("From: MAILER-DAEMON@x.example\r\nAuto-Submitted: auto-replied\r\nReturn-Path: <>", &[AutoReply, Bounce]),
        ];
        for (headers, want) in cases {
            assert_eq!(kinds(headers), *want, "headers: {headers:?}");
        }
    }
}
