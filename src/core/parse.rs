//! Parse: raw RFC 5322 bytes → `Inbound`, the facts later steps need, with every
//! header decoded. Pure: no I/O; never panics on hostile input (mail-parser is
//! best-effort by design).

use mail_parser::{Address, HeaderName, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::bounds::{self, Exceeded};
use super::charset;
use super::html;
use super::uuencode;

/// Characters kept of a subject or a display name (the RFC 5322 line limit); the whole
/// header stays in the raw message.
pub const MAX_TEXT_CHARS: usize = 998;
/// References looked up: the first few (the thread's root) and the last ones (the parent).
pub const MAX_REFERENCES: usize = 100;
const FIRST_REFERENCES: usize = 10;
/// Addresses kept of each of To and Cc.
pub const MAX_RECIPIENTS: usize = 100;

/// A display name and an address as written in the message (not yet normalised).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attachment {
    /// Safe to use as a file name: no path, no control characters.
    pub filename: String,
    pub content_type: String,
    pub size: usize,
    #[serde(skip)]
    pub content: Vec<u8>,
}

/// The headers that classification reads, already trimmed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Signals {
    pub auto_submitted: Option<String>,
    pub x_autoreply: bool,
    pub x_autorespond: bool,
    pub x_auto_response_suppress: Option<String>,
    pub precedence: Option<String>,
    pub list_id: bool,
    pub list_unsubscribe: bool,
    pub spam_flag: bool,
    /// Values of our own loop header, if the message carries it.
    pub loop_header: Vec<String>,
    /// The top-level type is `multipart/report` (a DSN or MDN).
    pub report: bool,
    /// `Return-Path: <>`: the null envelope sender of bounces.
    pub null_return_path: bool,
    /// The text quotes a delivery-status report (a bounce forwarded or inlined).
    pub report_in_body: bool,
    /// `X-List-Administrivia: yes`: a notice of the list manager, not a post.
    pub list_administrivia: bool,
    /// The content types of the message's parts, lower-case (the first 100).
    pub part_types: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inbound {
    pub message_id: Option<String>,
    pub from: Option<Mailbox>,
    pub reply_to: Option<Mailbox>,
    pub sender: Option<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub subject: String,
    /// RFC 3339, as the sender claimed it.
    pub date: Option<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    pub text_body: String,
    pub html_body: Option<String>,
    pub attachments: Vec<Attachment>,
    pub signals: Signals,
    /// SHA-256 of the raw bytes, computed only when there is no Message-ID: then it is
    /// the duplicate key.
    pub content_hash: Option<String>,
    pub size: usize,
    /// What was left out to keep the message within its bounds (the raw message has it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cut: Vec<String>,
}

impl Inbound {
    /// The key under which duplicates are recognised: Message-ID, else the content hash.
    pub fn message_key(&self) -> String {
        match &self.message_id {
            Some(id) => format!("mid:{id}"),
            None => format!("sha256:{}", self.content_hash.as_deref().unwrap_or_default()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("the message is empty")]
    Empty,
    #[error("no header section could be parsed")]
    NoHeaders,
    #[error("not an email message: no From, Sender, To, Subject, Date or Message-ID header")]
    NotMail,
    #[error("the MIME parser failed on its structure")]
    Parser,
    #[error("over postdesk's bounds: {0}")]
    Bound(#[from] Exceeded),
}

pub fn content_hash(raw: &[u8]) -> String {
    hex::encode(Sha256::digest(raw))
}

/// Drops leading white space and an mbox `From ` envelope line, as MTAs add when they
/// pipe a message.
fn strip_mbox_from_line(raw: &[u8]) -> &[u8] {
    let start = raw.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(raw.len());
    let raw = &raw[start..];
    if raw.starts_with(b"From ") {
        if let Some(end) = raw.iter().position(|&b| b == b'\n') {
            return &raw[end + 1..];
        }
    }
    raw
}

pub fn parse(raw: &[u8], loop_header: &str) -> Result<Inbound, ParseError> {
    let mut inbound = parse_message(raw, loop_header)?;
    inbound.signals.report_in_body = quotes_delivery_report(&inbound.text_body);
    if inbound.message_id.is_none() {
        inbound.content_hash = Some(content_hash(raw));
    }
    Ok(inbound)
}

/// Header fields postdesk reads: kept even past `bounds::MAX_TOP_FIELDS`.
fn is_read(name: &[u8], loop_header: &str) -> bool {
    const READ: [&str; 25] = [
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "auto-submitted",
        "x-autoreply",
        "x-autorespond",
        "x-auto-response-suppress",
        "precedence",
        "list-id",
        "list-unsubscribe",
        "x-spam-flag",
        "return-path",
        "feedback-type",
        "x-list-administrivia",
    ];
    READ.iter().any(|r| r.as_bytes().eq_ignore_ascii_case(name)) || name.eq_ignore_ascii_case(loop_header.as_bytes())
}

fn parse_message(raw: &[u8], loop_header: &str) -> Result<Inbound, ParseError> {
    let body = strip_mbox_from_line(raw);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    let shape = bounds::scan(body)?;
    let mut cut = Vec::new();
    let transcoded = charset::transcode_headers(body, &shape);
    let (source, header) = match &transcoded {
        Some((bytes, top_end)) => (bytes.as_slice(), 0..*top_end),
        None => (body, shape.sections.first().cloned().unwrap_or(0..0)),
    };
    let view = bounds::bound_header(source, header, |name| is_read(name, loop_header), &mut cut);
    // mail-parser promises never to panic, but some structures trip its debug assertions
    // (found by fuzzing): such a message is kept as failed, never the end of the process.
    let parsed = std::panic::catch_unwind(|| MessageParser::default().parse(view.as_ref()));
    let message = parsed.map_err(|_| ParseError::Parser)?.ok_or(ParseError::NoHeaders)?;
    if nesting(&message) > bounds::MAX_DEPTH {
        // The scan missed a structure the parser found: free it without recursion.
        dismantle(message);
        return Err(Exceeded::Depth.into());
    }
    if message.headers().is_empty() {
        return Err(ParseError::NoHeaders);
    }
    const ESSENTIAL: [&str; 6] = ["from", "sender", "to", "subject", "date", "message-id"];
    if !message.headers_raw().any(|(name, _)| ESSENTIAL.iter().any(|e| name.eq_ignore_ascii_case(e))) {
        return Err(ParseError::NotMail);
    }
    let (to, cc) = (mailboxes(message.to()), mailboxes(message.cc()));
    for (name, list) in [("To", &to), ("Cc", &cc)] {
        if list.len() > MAX_RECIPIENTS {
            cut.push(format!("{name}: kept the first {MAX_RECIPIENTS} of {} addresses", list.len()));
        }
    }
    let mut references = message_ids(message.references());
    if references.len() > MAX_REFERENCES {
        cut.push(format!("References: kept the first {FIRST_REFERENCES} and the last of {}", references.len()));
        references.drain(FIRST_REFERENCES..references.len() - (MAX_REFERENCES - FIRST_REFERENCES));
    }
    let mut in_reply_to = message_ids(message.in_reply_to());
    in_reply_to.truncate(FIRST_REFERENCES);
    let subject = message.subject().map(one_line).unwrap_or_default();
    if subject.chars().count() > MAX_TEXT_CHARS {
        cut.push(format!("Subject: kept the first {MAX_TEXT_CHARS} characters"));
    }
    let (text_body, uu_files) = text_body(&message, view.as_ref());
    let mut attachments = attachments(&message, view.as_ref());
    for file in uu_files {
        let position = attachments.len() + 1;
        attachments.push(Attachment {
            filename: sanitise_filename(Some(&file.name), position),
            content_type: "application/octet-stream".to_owned(),
            size: file.content.len(),
            content: file.content,
        });
    }
    let inbound = Inbound {
        message_id: message.message_id().and_then(clean_message_id),
        from: first_mailbox(message.from()),
        reply_to: first_mailbox(message.reply_to()),
        sender: first_mailbox(message.sender()),
        to: to.into_iter().take(MAX_RECIPIENTS).collect(),
        cc: cc.into_iter().take(MAX_RECIPIENTS).collect(),
        subject: bounded(&subject),
        date: message.date().map(|d| d.to_rfc3339()),
        in_reply_to,
        references,
        text_body,
        html_body: html_body(&message),
        attachments,
        signals: signals(&message, loop_header),
        content_hash: None,
        size: raw.len(),
        cut,
    };
    Ok(inbound)
}

/// At most `MAX_TEXT_CHARS` characters.
fn bounded(text: &str) -> String {
    text.chars().take(MAX_TEXT_CHARS).collect()
}

/// How deep `message/rfc822` parts nest in a parsed message, counted without recursion.
fn nesting(message: &Message) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(message, 0usize)];
    while let Some((m, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        if depth > bounds::MAX_DEPTH {
            break;
        }
        for part in &m.parts {
            if let PartType::Message(inner) = &part.body {
                stack.push((inner, depth + 1));
            }
        }
    }
    deepest
}

/// Frees a parsed message part by part, so that no nesting can exhaust the stack.
fn dismantle(message: Message) {
    let mut stack = vec![message];
    while let Some(mut m) = stack.pop() {
        for part in m.parts.drain(..) {
            if let PartType::Message(inner) = part.body {
                stack.push(inner);
            }
        }
    }
}

/// A Message-ID without angle brackets, or `None` when it is unusable.
fn clean_message_id(id: &str) -> Option<String> {
    let id = id.trim().trim_start_matches('<').trim_end_matches('>').trim();
    let usable = !id.is_empty() && id.len() <= 998 && !id.chars().any(|c| c.is_whitespace() || c.is_control());
    usable.then(|| id.to_owned())
}

fn message_ids(value: &HeaderValue) -> Vec<String> {
    let ids: Vec<&str> = match value {
        HeaderValue::Text(t) => vec![t.as_ref()],
        HeaderValue::TextList(list) => list.iter().map(|t| t.as_ref()).collect(),
        _ => Vec::new(),
    };
    ids.into_iter().filter_map(clean_message_id).collect()
}

/// Collapses folded or multi-line header text into one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn mailboxes(address: Option<&Address>) -> Vec<Mailbox> {
    let Some(address) = address else {
        return Vec::new();
    };
    address
        .iter()
        .filter_map(|a| {
            let addr = a.address()?.trim();
            (!addr.is_empty()).then(|| Mailbox {
                name: a.name().map(|n| bounded(&one_line(n))).filter(|n| !n.is_empty()),
                address: addr.to_owned(),
            })
        })
        .collect()
}

fn first_mailbox(address: Option<&Address>) -> Option<Mailbox> {
    mailboxes(address).into_iter().next()
}

/// Every inline text part, joined; HTML is rendered to text (with its structure) when
/// there is no text part. uuencoded blocks leave the text as files.
fn text_body(message: &Message, raw: &[u8]) -> (String, Vec<uuencode::File>) {
    let parts: Vec<String> = message
        .text_body
        .iter()
        .filter_map(|&id| message.parts.get(id as usize))
        .filter_map(|part| match &part.body {
            PartType::Text(text) if text.contains('\u{fffd}') => Some(redecoded(part, raw).unwrap_or(text.to_string())),
            PartType::Text(text) => Some(text.to_string()),
            PartType::Html(html) => Some(html::to_text(html)),
            _ => None,
        })
        .collect();
    uuencode::extract(&parts.join("\n"))
}

/// A text part whose bytes do not fit its declared charset (mail-parser put U+FFFD in),
/// decoded again with the charset chardetng finds, when that one fits.
fn redecoded(part: &MessagePart, raw: &[u8]) -> Option<String> {
    use mail_parser::decoders::{base64::base64_decode, quoted_printable::quoted_printable_decode};
    let body = raw.get(part.offset_body as usize..part.offset_end as usize)?;
    let bytes = match part.encoding {
        mail_parser::Encoding::QuotedPrintable => quoted_printable_decode(body)?,
        mail_parser::Encoding::Base64 => base64_decode(body)?,
        mail_parser::Encoding::None => body.to_vec(),
    };
    let text = charset::decode(&bytes, None);
    (!text.contains('\u{fffd}')).then_some(text)
}

/// The first real `text/html` part, if any (not a text part converted to HTML).
fn html_body(message: &Message) -> Option<String> {
    match &message.html_part(0)?.body {
        PartType::Html(html) => Some(html.to_string()),
        _ => None,
    }
}

/// The raw value of a part's header, from the bytes the message was parsed from.
fn raw_header<'a>(part: &MessagePart, name: HeaderName, raw: &'a [u8]) -> Option<&'a [u8]> {
    let h = part.headers.iter().find(|h| h.name == name)?;
    raw.get(h.offset_start as usize..h.offset_end as usize)
}

/// An attachment's name: RFC 2231 sections joined by us (mail-parser decodes each alone,
/// which breaks stateful charsets), else what mail-parser found.
fn attachment_name(part: &MessagePart, raw: &[u8]) -> Option<String> {
    raw_header(part, HeaderName::ContentDisposition, raw)
        .and_then(|v| charset::rfc2231_parameter(v, "filename"))
        .or_else(|| raw_header(part, HeaderName::ContentType, raw).and_then(|v| charset::rfc2231_parameter(v, "name")))
        .or_else(|| part.attachment_name().map(str::to_owned))
}

fn attachments(message: &Message, raw: &[u8]) -> Vec<Attachment> {
    message
        .attachments()
        .enumerate()
        .map(|(i, part)| {
            let content_type = part.content_type().map_or_else(
                || "application/octet-stream".to_owned(),
                |ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("octet-stream")).to_lowercase(),
            );
            let mut content = part.contents().to_vec();
            let mut name = attachment_name(part, raw);
            // `x-uuencode` is no MIME encoding: mail-parser leaves the part as it came.
            let uuencoded = raw_header(part, HeaderName::ContentTransferEncoding, raw).is_some_and(|v| {
                let v = String::from_utf8_lossy(v).trim().to_ascii_lowercase();
                matches!(v.as_str(), "x-uuencode" | "uuencode" | "x-uue")
            });
            if uuencoded {
                if let Some(file) = uuencode::extract(&String::from_utf8_lossy(&content)).1.into_iter().next() {
                    name = name.or(Some(file.name));
                    content = file.content;
                }
            }
            Attachment {
                filename: sanitise_filename(name.as_deref(), i + 1),
                content_type,
                size: content.len(),
                content,
            }
        })
        .collect()
}

/// Characters that change how a name displays without showing themselves: bidi
/// overrides, embeddings and isolates (`invoice\u{202e}gpj.exe` shows as `invoiceexe.jpg`),
/// marks, zero-width characters and other invisible format characters.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{061c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}' | '\u{180b}'..='\u{180f}'
        | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{3164}'
        | '\u{fe00}'..='\u{fe0f}' | '\u{feff}' | '\u{ffa0}' | '\u{fff9}'..='\u{fffb}' | '\u{1d173}'..='\u{1d17a}'
        | '\u{e0000}'..='\u{e0fff}')
}

/// Windows reserves these names with any extension (`CON`, `nul.txt`, `LPT1.log`).
fn is_device_name(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or("").trim_end().to_ascii_uppercase();
    matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.as_bytes()[3].is_ascii_digit())
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && ["\u{b9}", "\u{b2}", "\u{b3}"].contains(&&stem[3..]))
}

/// A name safe to show and to save on common systems: only the last path component;
/// no control, invisible or bidi characters, none of `<>:"|?*`; no leading dots or
/// spaces, no trailing dots or spaces; a Windows device name gets a `_` in front.
pub fn sanitise_filename(name: Option<&str>, position: usize) -> String {
    let base = name.unwrap_or("").rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .filter(|&c| !c.is_control() && !is_invisible(c) && !"<>:\"|?*".contains(c))
        .take(200)
        .collect::<String>();
    let cleaned = cleaned.trim_start_matches(|c: char| c == '.' || c.is_whitespace());
    let cleaned = cleaned.trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    if cleaned.is_empty() {
        format!("attachment-{position}")
    } else if is_device_name(cleaned) {
        format!("_{cleaned}")
    } else {
        cleaned.to_owned()
    }
}

/// RFC 3464 fields in the text, quoted or not: `Final-Recipient:` and a 4.x.x/5.x.x `Status:`.
fn quotes_delivery_report(text: &str) -> bool {
    let starts = |line: &str, prefix: &str| line.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix));
    let (mut recipient, mut status) = (false, false);
    // Only a line with a colon can hold either field: the lines between are skipped at
    // memchr's speed (this runs over the text of every message).
    let bytes = text.as_bytes();
    let mut next_line = 0;
    for colon in memchr::memchr_iter(b':', bytes) {
        if colon < next_line {
            continue;
        }
        let start = memchr::memrchr(b'\n', &bytes[..colon]).map_or(0, |i| i + 1);
        next_line = memchr::memchr(b'\n', &bytes[colon..]).map_or(bytes.len(), |i| colon + i);
        let line = text[start..next_line].trim_start_matches(|c: char| c == '>' || c.is_whitespace());
        recipient |= starts(line, "final-recipient:");
        status |= starts(line, "status:") && line["status:".len()..].trim_start().starts_with(['4', '5']);
        if recipient && status {
            return true;
        }
    }
    false
}

fn signals(message: &Message, loop_header: &str) -> Signals {
    let mut s = Signals::default();
    for (name, value) in message.headers_raw() {
        let value = value.trim();
        let lower = || value.to_ascii_lowercase();
        match name.to_ascii_lowercase().as_str() {
            "auto-submitted" => s.auto_submitted = Some(lower()),
            "x-autoreply" => s.x_autoreply = true,
            "x-autorespond" => s.x_autorespond = true,
            "x-auto-response-suppress" => s.x_auto_response_suppress = Some(lower()),
            "precedence" => s.precedence = Some(lower()),
            "list-id" => s.list_id = true,
            "list-unsubscribe" => s.list_unsubscribe = true,
            "x-list-administrivia" => s.list_administrivia |= lower().starts_with("yes"),
            "x-spam-flag" => s.spam_flag |= lower().starts_with("yes"),
            "return-path" => s.null_return_path |= value.trim_matches(|c| c == '<' || c == '>').is_empty(),
            n if n.eq_ignore_ascii_case(loop_header) => s.loop_header.push(lower()),
            _ => {}
        }
    }
    s.part_types = message
        .parts
        .iter()
        .take(100)
        .filter_map(|p| p.content_type())
        .map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).to_ascii_lowercase())
        .collect();
    s.report = message.root_part().content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart") && ct.subtype().is_some_and(|st| st.eq_ignore_ascii_case("report"))
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(raw: &str) -> Inbound {
        parse(raw.as_bytes(), "X-Postdesk-Loop").expect("parses")
    }

    #[test]
    fn decodes_headers_and_ids() {
        let m = parse_str(
            "From: =?UTF-8?Q?J=C3=B6rg?= <Joerg@Example.com>\r\nTo: a@b.example, c@d.example\r\n\
             Subject: =?ISO-8859-1?Q?Gr=FC=DFe?=\r\n  und mehr\r\nMessage-ID: <abc@host>\r\n\
             In-Reply-To: <x@y>\r\nReferences: <r1@y> <x@y>\r\n\r\nhello\r\n",
        );
        assert_eq!(m.message_id.as_deref(), Some("abc@host"));
        assert_eq!(m.from.as_ref().unwrap().name.as_deref(), Some("Jörg"));
        assert_eq!(m.from.as_ref().unwrap().address, "Joerg@Example.com");
        assert_eq!(m.to.len(), 2);
        assert_eq!(m.subject, "Grüße und mehr");
        assert_eq!(m.in_reply_to, vec!["x@y"]);
        assert_eq!(m.references, vec!["r1@y", "x@y"]);
        assert_eq!(m.text_body.trim(), "hello");
        assert_eq!(m.message_key(), "mid:abc@host");
    }

    #[test]
    fn a_body_whose_bytes_do_not_fit_its_charset_is_detected() {
        let raw = "From: a@b.example\r\nContent-Type: text/plain; charset=UTF-8\r\n\
                   Content-Transfer-Encoding: quoted-printable\r\n\r\nDie Hasen und die Fr=F6sche, =FCber Gr=FC=DFe\r\n";
        assert_eq!(parse_str(raw).text_body.trim(), "Die Hasen und die Frösche, über Grüße");
        let literal = "From: a@b.example\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nkept \u{fffd} as sent\r\n";
        assert_eq!(parse_str(literal).text_body.trim(), "kept \u{fffd} as sent");
    }

    #[test]
    fn html_only_is_rendered_to_text() {
        let m = parse_str("From: a@b.example\r\nContent-Type: text/html\r\n\r\n<p>Hello &amp; <b>welcome</b></p>");
        assert!(m.text_body.contains("Hello & welcome"), "{:?}", m.text_body);
        assert!(m.html_body.unwrap().contains("<b>"));
    }

    #[test]
    fn without_message_id_the_key_is_the_hash() {
        let raw = "From: a@b.example\r\nSubject: x\r\n\r\nbody";
        let m = parse_str(raw);
        assert_eq!(m.message_key(), format!("sha256:{}", content_hash(raw.as_bytes())));
    }

    #[test]
    fn empty_and_headerless_input_fail() {
        assert_eq!(parse(b"", "X-Loop").unwrap_err(), ParseError::Empty);
        assert_eq!(parse(b"  \r\n", "X-Loop").unwrap_err(), ParseError::Empty);
        assert_eq!(parse(b"{\"json\": true}\n", "X-Loop").unwrap_err(), ParseError::NotMail);
        assert_eq!(parse(b"Foo: bar\n\nbody", "X-Loop").unwrap_err(), ParseError::NotMail);
    }

    #[test]
    fn a_quoted_delivery_report_is_noticed() {
        let bounce = parse_str(
            "From: a@b.example\n\n> Final-Recipient: rfc822; x@y.example\n> Action: failed\n> Status: 5.1.1\n",
        );
        assert!(bounce.signals.report_in_body);
        let chat = parse_str("From: a@b.example\n\nStatus: 5 of 7 done\n");
        assert!(!chat.signals.report_in_body);
        // Only lines with a colon are read: the fields still count anywhere in the text.
        assert!(quotes_delivery_report("FINAL-RECIPIENT: x\r\nno colon here\r\n>>  status: 4.2.2"));
        assert!(quotes_delivery_report("a: b: c\nFinal-Recipient: x; y: z\n\u{a0}Status:5.0.0\n"));
        assert!(!quotes_delivery_report("Final-Recipient: x\nStatus: 2.0.0\nlater Status: 5.0.0\n"));
    }

    #[test]
    fn mbox_from_line_is_dropped() {
        let m =
            parse_str("\r\nFrom alice@example.com Mon Nov 23 10:00:00 2026\nFrom: alice@example.com\nSubject: s\n\nb");
        assert_eq!(m.from.unwrap().address, "alice@example.com");
        assert_eq!(m.subject, "s");
    }

    #[test]
    fn filenames_are_sanitised() {
        let cases = [
            (Some("../../etc/passwd"), "passwd"),
            (Some("C:\\Users\\x\\evil.exe"), "evil.exe"),
            (Some("..hidden"), "hidden"),
            (Some("a\u{0}b<c>.txt"), "abc.txt"),
            (Some("   "), "attachment-3"),
            (None, "attachment-3"),
            (Some("Rechnung März.pdf"), "Rechnung März.pdf"),
            (Some("invoice\u{202e}gpj.exe"), "invoicegpj.exe"),
            (Some("\u{2067}report\u{2069}.pdf"), "report.pdf"),
            (Some("pay\u{200b}roll\u{feff}.xlsx"), "payroll.xlsx"),
            (Some("CON"), "_CON"),
            (Some("nul.txt"), "_nul.txt"),
            (Some("LPT1.txt"), "_LPT1.txt"),
            (Some("com9.tar.gz"), "_com9.tar.gz"),
            (Some("console.log"), "console.log"),
            (Some("COM10.txt"), "COM10.txt"),
            (Some("   notes.txt. . "), "notes.txt"),
            (Some("report.pdf..."), "report.pdf"),
            (Some("\u{202e}\u{200b}"), "attachment-3"),
        ];
        for (input, want) in cases {
            assert_eq!(sanitise_filename(input, 3), want, "{input:?}");
        }
    }

    fn nested(depth: usize) -> Vec<u8> {
        let mut raw = b"From: a@b.example\r\nSubject: deep\r\nContent-Type: message/rfc822\r\n\r\n".to_vec();
        raw.extend(b"From: a@b.example\r\nContent-Type: message/rfc822\r\n\r\n".repeat(depth));
        raw.extend(b"From: a@b.example\r\n\r\nhi\r\n");
        raw
    }

    /// 34,000 nested `message/rfc822` parts once overflowed the stack when freed.
    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack() {
        assert_eq!(parse(&nested(34_000), "X-Loop").unwrap_err(), ParseError::Bound(Exceeded::Depth));
        assert!(parse(&nested(10), "X-Loop").is_ok());
        // The safety net behind the scan: measured and freed without recursion.
        let raw = nested(34_000);
        let message = MessageParser::default().parse(&raw).unwrap();
        assert!(nesting(&message) > bounds::MAX_DEPTH);
        dismantle(message);
    }

    /// Inputs the fuzzer found (fixtures/fuzz): each parses or fails, and never panics.
    #[test]
    fn fuzz_findings_do_not_panic() {
        let findings: [&[u8]; 1] = [include_bytes!("../../fixtures/fuzz/mail-parser-debug-assertion.eml")];
        for raw in findings {
            let _ = parse(raw, "X-Loop");
        }
    }

    #[test]
    fn long_lists_and_texts_are_bounded() {
        let to: Vec<String> = (0..5_000).map(|i| format!("u{i}@x.example")).collect();
        let refs: Vec<String> = (0..5_000).map(|i| format!("<r{i}@x.example>")).collect();
        let raw = format!(
            "From: {} <a@b.example>\r\nTo: {}\r\nReferences: {}\r\nSubject: {}\r\n\r\nbody\r\n",
            "N".repeat(5_000),
            to.join(", "),
            refs.join(" "),
            "S".repeat(137_000)
        );
        let m = parse_str(&raw);
        assert_eq!(m.to.len(), MAX_RECIPIENTS);
        assert_eq!(m.references.len(), MAX_REFERENCES);
        assert_eq!((m.references[0].as_str(), m.references[99].as_str()), ("r0@x.example", "r4999@x.example"));
        assert_eq!(m.subject.chars().count(), MAX_TEXT_CHARS);
        assert_eq!(m.from.unwrap().name.unwrap().chars().count(), MAX_TEXT_CHARS);
        assert_eq!(m.cut.len(), 6, "{:?}", m.cut);
    }

    #[test]
    fn reads_classification_signals() {
        let m = parse_str(
            "From: a@b.example\r\nAuto-Submitted: Auto-Replied\r\nPrecedence: Bulk\r\nList-Id: <l.example>\r\n\
             X-Spam-Flag: YES\r\nReturn-Path: <>\r\nX-Postdesk-Loop: support@h.example\r\n\r\nx",
        );
        let s = m.signals;
        assert_eq!(s.auto_submitted.as_deref(), Some("auto-replied"));
        assert_eq!(s.precedence.as_deref(), Some("bulk"));
        assert!(s.list_id && s.spam_flag && s.null_return_path);
        assert_eq!(s.loop_header, vec!["support@h.example"]);
    }
}
