//! Bounds: what one message may cost before and while it is parsed. A linear scan of the
//! raw bytes measures the MIME structure (nesting depth, parts, header fields) and
//! refuses a message past the bounds before any parser allocates for it; the top-level
//! header section is cut to a bounded size (the raw message is kept whole elsewhere).
//! Pure; never panics, never recurses.

use std::borrow::Cow;
use std::ops::Range;

/// MIME parts (multipart and `message/rfc822`) nested deeper than this: refused.
pub const MAX_DEPTH: usize = 40;
/// MIME parts in one message, counting every boundary line: refused past this.
pub const MAX_PARTS: usize = 2_000;
/// Header fields over all header sections of the parts: refused past this.
pub const MAX_PART_HEADER_FIELDS: usize = 20_000;
/// Header fields of the message itself kept whole; past this only the first occurrence of
/// a field postdesk reads is kept.
pub const MAX_TOP_FIELDS: usize = 1_000;
/// Bytes of one top-level header field kept (To with thousands of addresses is cut at an
/// address; References keeps its first and last message-ids).
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// Bytes of the message's own header kept whole; past this, as past `MAX_TOP_FIELDS`.
pub const MAX_HEADER_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    #[error("its MIME parts are nested more than {MAX_DEPTH} deep")]
    Depth,
    #[error("it has more than {MAX_PARTS} MIME parts")]
    Parts,
    #[error("its parts have more than {MAX_PART_HEADER_FIELDS} header fields")]
    HeaderFields,
}

/// What the scan learnt about a message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shape {
    /// Byte ranges of the header sections (the message's own first), without the blank
    /// line that ends each.
    pub sections: Vec<Range<usize>>,
    /// The `charset` of the first text part that declares one.
    pub text_charset: Option<String>,
    pub depth: usize,
    pub parts: usize,
}

enum Frame {
    Multipart { boundary: Vec<u8>, digest: bool },
    Message,
}

/// The header fields of a section being read.
#[derive(Default)]
struct Section {
    start: usize,
    content_type: Vec<u8>,
    in_content_type: bool,
    encoded: bool,
}

/// Lines of `raw` with their start offsets, without the line ending.
fn lines(raw: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= raw.len() {
            return None;
        }
        let start = pos;
        let end = memchr::memchr(b'\n', &raw[pos..]).map_or(raw.len(), |i| pos + i);
        pos = end + 1;
        let line = &raw[start..end];
        Some((start, line.strip_suffix(b"\r").unwrap_or(line)))
    })
}

/// A MIME parameter's value (`boundary`, `charset`) from a lower-cased Content-Type.
pub fn parameter(content_type: &[u8], name: &str) -> Option<Vec<u8>> {
    let lower = content_type.to_ascii_lowercase();
    let key = format!("{name}=");
    let mut from = 0;
    while let Some(i) = find(&lower[from..], key.as_bytes()) {
        let at = from + i;
        let before = lower[..at].iter().rev().find(|b| !b.is_ascii_whitespace());
        from = at + key.len();
        if !matches!(before, Some(b';')) {
            continue;
        }
        let rest = &content_type[from..];
        let value = match rest.strip_prefix(b"\"") {
            Some(quoted) => &quoted[..quoted.iter().position(|&b| b == b'"').unwrap_or(quoted.len())],
            None => &rest[..rest.iter().position(|&b| b == b';' || b.is_ascii_whitespace()).unwrap_or(rest.len())],
        };
        return (!value.is_empty()).then(|| value.to_vec());
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether `line` holds `--boundary` of a multipart in `stack`: the index of that frame
/// and whether it is the closing delimiter.
fn delimiter(line: &[u8], stack: &[Frame]) -> Option<(usize, bool)> {
    for dash in memchr::memchr_iter(b'-', line) {
        let Some(rest) = line[dash + 1..].strip_prefix(b"-") else { continue };
        for (index, frame) in stack.iter().enumerate().rev() {
            if let Frame::Multipart { boundary, .. } = frame {
                if let Some(after) = rest.strip_prefix(boundary.as_slice()) {
                    return Some((index, after.starts_with(b"--")));
                }
            }
        }
    }
    None
}

/// Measures the MIME structure in one pass, stopping as soon as a bound is passed.
pub fn scan(raw: &[u8]) -> Result<Shape, Exceeded> {
    let mut shape = Shape { parts: 1, ..Shape::default() };
    let mut stack: Vec<Frame> = Vec::new();
    let mut section = Some(Section::default());
    let mut fields = 0usize;
    let mut top = true;
    for (start, line) in lines(raw) {
        if let Some(s) = section.as_mut() {
            if line.is_empty() {
                let s = section.take().unwrap_or_default();
                shape.sections.push(s.start..start);
                section = open_part(&s, &mut stack, &mut shape, start + line_len(raw, start))?;
                top = false;
            } else if line[0] == b' ' || line[0] == b'\t' {
                if s.in_content_type && s.content_type.len() < 4096 {
                    s.content_type.extend_from_slice(line);
                }
            } else {
                if !top {
                    fields += 1;
                    if fields > MAX_PART_HEADER_FIELDS {
                        return Err(Exceeded::HeaderFields);
                    }
                }
                let (name, value) = match line.iter().position(|&b| b == b':') {
                    Some(colon) => (line[..colon].trim_ascii(), &line[colon + 1..]),
                    None => (line, &b""[..]),
                };
                s.in_content_type = name.eq_ignore_ascii_case(b"content-type");
                if s.in_content_type {
                    s.content_type = value.iter().take(4096).copied().collect();
                }
                if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
                    let v = value.trim_ascii();
                    s.encoded = v.eq_ignore_ascii_case(b"base64") || v.eq_ignore_ascii_case(b"quoted-printable");
                }
            }
            continue;
        }
        // Only a delimiter line can open anything more: past the header sections of a
        // message without an open multipart, the rest is body (most mail, most bytes).
        if !stack.iter().any(|f| matches!(f, Frame::Multipart { .. })) {
            break;
        }
        if let Some((index, closing)) = delimiter(line, &stack) {
            shape.parts += 1;
            if shape.parts > MAX_PARTS {
                return Err(Exceeded::Parts);
            }
            stack.truncate(index + 1);
            if closing {
                stack.pop();
            } else {
                section = Some(Section { start: start + line_len(raw, start), ..Section::default() });
            }
        }
    }
    if let Some(s) = section {
        shape.sections.push(s.start..raw.len());
    }
    Ok(shape)
}

/// The length of the line at `start` with its line ending.
fn line_len(raw: &[u8], start: usize) -> usize {
    memchr::memchr(b'\n', &raw[start..]).map_or(raw.len() - start, |i| i + 1)
}

/// At the blank line after a header section: what its Content-Type opens. Returns the
/// next header section when the body is itself a message.
fn open_part(
    s: &Section,
    stack: &mut Vec<Frame>,
    shape: &mut Shape,
    body_start: usize,
) -> Result<Option<Section>, Exceeded> {
    let ct = s.content_type.trim_ascii().to_ascii_lowercase();
    let in_digest = matches!(stack.last(), Some(Frame::Multipart { digest: true, .. }));
    let opened = if ct.starts_with(b"multipart/") {
        parameter(&ct, "boundary")
            .map(|_| Frame::Multipart {
                boundary: parameter(&s.content_type, "boundary").unwrap_or_default(),
                digest: ct.starts_with(b"multipart/digest"),
            })
            .filter(|f| matches!(f, Frame::Multipart { boundary, .. } if !boundary.is_empty()))
    } else if (ct.starts_with(b"message/rfc822") || ct.starts_with(b"message/global") || (ct.is_empty() && in_digest))
        && !s.encoded
    {
        Some(Frame::Message)
    } else {
        if shape.text_charset.is_none() && (ct.is_empty() || ct.starts_with(b"text/")) {
            shape.text_charset = parameter(&ct, "charset").map(|c| String::from_utf8_lossy(&c).into_owned());
        }
        None
    };
    let Some(frame) = opened else {
        return Ok(None);
    };
    let message = matches!(frame, Frame::Message);
    stack.push(frame);
    shape.depth = shape.depth.max(stack.len());
    if stack.len() > MAX_DEPTH {
        return Err(Exceeded::Depth);
    }
    Ok(message.then(|| Section { start: body_start, ..Section::default() }))
}

/// One header field: its name and every byte of it, continuation lines included.
pub(crate) struct Field<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) bytes: &'a [u8],
}

pub(crate) fn fields(section: &[u8]) -> impl Iterator<Item = Field<'_>> {
    let mut lines = lines(section).peekable();
    std::iter::from_fn(move || {
        let (start, line) = lines.next()?;
        let mut end = start + line_len(section, start);
        while let Some(&(next, _)) = lines.peek().filter(|(_, l)| matches!(l.first(), Some(b' ' | b'\t'))) {
            end = next + line_len(section, next);
            lines.next();
        }
        let name = line.iter().position(|&b| b == b':').map_or(line, |c| line[..c].trim_ascii());
        Some(Field { name, bytes: &section[start..end] })
    })
}

/// Cuts a field longer than `MAX_FIELD_BYTES`: at a comma or white space; References
/// and In-Reply-To keep their first and last message-ids (the parent is the last).
fn cut_field(field: &Field) -> Vec<u8> {
    let ending: &[u8] = if field.bytes.ends_with(b"\r\n") { b"\r\n" } else { b"\n" };
    let body = field.bytes.strip_suffix(ending).unwrap_or(field.bytes);
    let threading = field.name.eq_ignore_ascii_case(b"references") || field.name.eq_ignore_ascii_case(b"in-reply-to");
    let head_len = if threading { MAX_FIELD_BYTES / 8 } else { MAX_FIELD_BYTES };
    let is_break = |b: &u8| *b == b',' || b.is_ascii_whitespace();
    let mut at = body[..head_len].iter().rposition(is_break).filter(|&i| i > head_len / 2).unwrap_or(head_len);
    while at > 0 && body[at] & 0xC0 == 0x80 {
        at -= 1; // not inside a UTF-8 sequence
    }
    let head = &body[..at];
    let mut out = head.to_vec();
    if threading {
        let tail_from = body.len() - (MAX_FIELD_BYTES - head_len);
        let tail = &body[tail_from..];
        let tail = &tail[tail.iter().position(|b| b.is_ascii_whitespace()).unwrap_or(tail.len())..];
        out.extend_from_slice(b" ");
        out.extend_from_slice(tail.trim_ascii_start());
    }
    // A cut inside a folded line must not leave a bare line break behind.
    out.retain(|&b| b != b'\r' && b != b'\n');
    out.extend_from_slice(ending);
    out
}

/// The message with its own header section bounded; `cuts` says what was left out.
/// `read` tells the fields postdesk reads, which are kept past `MAX_TOP_FIELDS`.
pub fn bound_header<'a>(
    raw: &'a [u8],
    header: Range<usize>,
    read: impl Fn(&[u8]) -> bool,
    cuts: &mut Vec<String>,
) -> Cow<'a, [u8]> {
    let section = &raw[header.clone()];
    let (count, oversized) =
        fields(section).fold((0usize, false), |(n, big), f| (n + 1, big || f.bytes.len() > MAX_FIELD_BYTES));
    if count <= MAX_TOP_FIELDS && !oversized && section.len() <= MAX_HEADER_BYTES {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len().min(header.len()) + (raw.len() - header.end));
    out.extend_from_slice(&raw[..header.start]);
    let mut kept_names: Vec<Vec<u8>> = Vec::new();
    let mut dropped = 0usize;
    let mut kept_bytes = 0usize;
    for (i, field) in fields(section).enumerate() {
        let lower = field.name.to_ascii_lowercase();
        let past = i >= MAX_TOP_FIELDS || kept_bytes > MAX_HEADER_BYTES;
        if past && (!read(&lower) || kept_names.contains(&lower)) {
            dropped += 1;
            continue;
        }
        kept_bytes += field.bytes.len().min(MAX_FIELD_BYTES);
        if field.bytes.len() > MAX_FIELD_BYTES {
            cuts.push(format!(
                "header {} cut from {} to {MAX_FIELD_BYTES} bytes",
                String::from_utf8_lossy(field.name),
                field.bytes.len()
            ));
            out.extend(cut_field(&field));
        } else {
            out.extend_from_slice(field.bytes);
        }
        if past {
            kept_names.push(lower);
        }
    }
    if dropped > 0 {
        cuts.push(format!(
            "{dropped} header fields past the first {MAX_TOP_FIELDS} or {MAX_HEADER_BYTES} bytes left out"
        ));
    }
    out.extend_from_slice(&raw[header.end..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Vec<u8> {
        let mut raw = b"From: a@b.example\r\nSubject: deep\r\n".to_vec();
        for _ in 0..depth {
            raw.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\nFrom: a@b.example\r\n");
        }
        raw.extend_from_slice(b"\r\nhello\r\n");
        raw
    }

    #[test]
    fn depth_parts_and_fields_are_bounded() {
        assert_eq!(scan(&nested(MAX_DEPTH)).map(|s| s.depth), Ok(MAX_DEPTH));
        assert_eq!(scan(&nested(MAX_DEPTH + 1)), Err(Exceeded::Depth));
        assert_eq!(scan(&nested(200_000)), Err(Exceeded::Depth));

        let multipart = |parts: usize| {
            let mut raw = b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n".to_vec();
            raw.extend(b"--b\r\n\r\nx\r\n".repeat(parts));
            raw.extend(b"--b--\r\n");
            raw
        };
        assert!(scan(&multipart(100)).is_ok());
        assert_eq!(scan(&multipart(MAX_PARTS + 5)), Err(Exceeded::Parts));

        let mut deep_multipart = b"From: a@b.example\r\n".to_vec();
        for i in 0..50 {
            deep_multipart.extend(format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n").bytes());
        }
        assert_eq!(scan(&deep_multipart), Err(Exceeded::Depth));

        let mut many_fields = multipart(1);
        let at = many_fields.windows(5).position(|w| w == b"--b\r\n").unwrap() + 5;
        many_fields.splice(at..at, b"X-A: 1\r\n".repeat(MAX_PART_HEADER_FIELDS + 1));
        assert_eq!(scan(&many_fields), Err(Exceeded::HeaderFields));
    }

    #[test]
    fn a_digest_of_many_messages_is_not_deep() {
        let mut raw = b"From: a@b.example\r\nContent-Type: multipart/digest; boundary=d\r\n\r\n".to_vec();
        for _ in 0..300 {
            raw.extend(b"--d\r\n\r\nFrom: x@y.example\r\nSubject: s\r\n\r\nbody\r\n");
        }
        raw.extend(b"--d--\r\n");
        let shape = scan(&raw).unwrap();
        assert_eq!((shape.depth, shape.parts), (2, 302));
    }

    #[test]
    fn delimiters_are_found_after_other_dashes_and_nothing_after_the_last() {
        let raw = b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
            ---b\r\nX-Part: 1\r\n\r\none\r\n--b--\r\nepilogue\r\n--b\r\nX-Part: 2\r\n\r\ntwo\r\n";
        let shape = scan(raw).unwrap();
        assert_eq!((shape.sections.len(), shape.parts), (2, 3));
        assert!(raw[shape.sections[1].clone()].starts_with(b"X-Part: 1"));
    }

    #[test]
    fn sections_and_charset() {
        let raw = b"From: a@b.example\r\nContent-Type: multipart/alternative; boundary=\"=_x\"\r\n\r\npre\r\n\
            --=_x\r\nContent-Type: text/plain;\r\n charset=\"GBK\"\r\n\r\ntext\r\n--=_x--\r\n";
        let shape = scan(raw).unwrap();
        assert_eq!(shape.sections.len(), 2);
        assert_eq!(
            &raw[shape.sections[0].clone()],
            b"From: a@b.example\r\nContent-Type: multipart/alternative; boundary=\"=_x\"\r\n"
        );
        assert!(raw[shape.sections[1].clone()].starts_with(b"Content-Type: text/plain;"));
        assert_eq!(shape.text_charset.as_deref(), Some("gbk"));
    }

    #[test]
    fn parameters() {
        assert_eq!(parameter(b"multipart/mixed; boundary=\"a b\"", "boundary"), Some(b"a b".to_vec()));
        assert_eq!(parameter(b"text/plain; charset=utf-8; format=flowed", "charset"), Some(b"utf-8".to_vec()));
        assert_eq!(parameter(b"text/plain; xcharset=utf-8", "charset"), None);
        assert_eq!(parameter(b"text/plain", "charset"), None);
    }

    #[test]
    fn the_top_header_is_cut() {
        let to: Vec<String> = (0..20_000).map(|i| format!("u{i}@x.example")).collect();
        let refs: Vec<String> = (0..20_000).map(|i| format!("<r{i}@x.example>")).collect();
        let raw = format!(
            "From: a@b.example\r\nTo: {}\r\nReferences: {}\r\n{}Subject: s\r\n\r\nbody\r\n",
            to.join(",\r\n "),
            refs.join(" "),
            "X-Junk: 1\r\n".repeat(3_000),
        );
        let header = scan(raw.as_bytes()).unwrap().sections[0].clone();
        let mut cuts = Vec::new();
        let read = |name: &[u8]| name == b"subject";
        let bounded = bound_header(raw.as_bytes(), header, read, &mut cuts);
        let text = String::from_utf8(bounded.into_owned()).unwrap();
        assert!(text.len() < 4 * MAX_FIELD_BYTES, "{}", text.len());
        assert!(text.contains("Subject: s\r\n\r\nbody\r\n"));
        assert!(text.contains("<r0@x.example>") && text.contains("<r19999@x.example>\r\n"));
        assert!(text.contains("To: u0@x.example,") && !text.contains("u19999@"));
        assert_eq!(text.matches("X-Junk").count(), MAX_TOP_FIELDS - 3);
        assert_eq!(cuts.len(), 3, "{cuts:?}");
    }

    #[test]
    fn repeated_big_fields_are_bounded_in_bytes() {
        let to: Vec<String> = (0..3_000).map(|i| format!("u{i}@x.example")).collect();
        let field = format!("To: {}\r\n", to.join(", "));
        let raw = format!("From: a@b.example\r\n{}Subject: s\r\n\r\nbody\r\n", field.repeat(200));
        let header = scan(raw.as_bytes()).unwrap().sections[0].clone();
        let mut cuts = Vec::new();
        let bounded = bound_header(raw.as_bytes(), header, |n| n == b"to" || n == b"subject", &mut cuts);
        assert!(bounded.len() < MAX_HEADER_BYTES + 2 * MAX_FIELD_BYTES, "{}", bounded.len());
        assert!(bounded.ends_with(b"Subject: s\r\n\r\nbody\r\n"));
    }

    #[test]
    fn a_small_header_is_borrowed() {
        let raw = b"From: a@b.example\r\nSubject: s\r\n\r\nbody";
        let header = scan(raw).unwrap().sections[0].clone();
        assert!(matches!(bound_header(raw, header, |_| true, &mut Vec::new()), Cow::Borrowed(_)));
    }
}
