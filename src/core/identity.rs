//! Identity: when two raw messages are the same message. A Message-ID alone is not
//! identity (mailers reuse them, and anyone can copy one); the same Message-ID *and*
//! the same content is. Pure: the store compares what it has stored.

use sha2::{Digest, Sha256};

/// The header section and the body are looked at up to this many bytes.
const MAX_DIGEST_BYTES: usize = 64 * 1024 * 1024;

/// SHA-256 (hex) over the body and the From, Date and Subject headers, so that the same
/// mail delivered to two mailboxes (different `Received`, `Delivered-To`, `Return-Path`,
/// `X-Original-To`, …) digests the same, whatever its line endings.
pub fn content_digest(raw: &[u8]) -> String {
    let raw = &raw[..raw.len().min(MAX_DIGEST_BYTES)];
    let raw = skip_envelope_line(raw);
    let (head, body) = split(raw);
    let mut hash = Sha256::new();
    for name in ["from", "date", "subject"] {
        let values = super::trust::header_values(head, name);
        hash.update(name.as_bytes());
        hash.update(b":");
        for v in values {
            hash.update(v.split_whitespace().collect::<Vec<_>>().join(" ").as_bytes());
            hash.update(b"\n");
        }
    }
    hash.update(b"\n");
    // Line endings and trailing white space at the end differ between transports: the
    // lines up to the last that is not blank, each ended by LF.
    if let Some(last) = body.iter().rposition(|b| !b.is_ascii_whitespace()) {
        let end = body[last..].iter().position(|&b| b == b'\n').map_or(body.len(), |n| last + n);
        for line in body[..end].split(|&b| b == b'\n') {
            hash.update(line.strip_suffix(b"\r").unwrap_or(line));
            hash.update(b"\n");
        }
    }
    hex::encode(hash.finalize())
}

/// An mbox `From ` line (and white space before it) is not part of the message.
fn skip_envelope_line(raw: &[u8]) -> &[u8] {
    let start = raw.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(raw.len());
    let rest = &raw[start..];
    match rest.starts_with(b"From ").then(|| rest.iter().position(|&b| b == b'\n')).flatten() {
        Some(end) => &rest[end + 1..],
        None => rest,
    }
}

/// Header section and body, split at the first empty line.
fn split(raw: &[u8]) -> (&[u8], &[u8]) {
    let mut i = 0;
    while let Some(n) = raw[i..].iter().position(|&b| b == b'\n') {
        let next = i + n + 1;
        let line_after = &raw[next..];
        if line_after.starts_with(b"\n") {
            return (&raw[..next], &raw[next + 1..]);
        }
        if line_after.starts_with(b"\r\n") {
            return (&raw[..next], &raw[next + 2..]);
        }
        i = next;
    }
    (raw, &[])
}

/// The duplicate key stored with an article: unique for the same Message-ID and the
/// same content; the content alone when there is no Message-ID.
pub fn message_key(message_id: Option<&str>, digest: &str) -> String {
    match message_id {
        Some(id) => format!("mid:{id};{digest}"),
        None => format!("digest:{digest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_headers_and_line_endings_do_not_change_the_digest() {
        let one = "Return-Path: <a@acme.example>\r\nReceived: from mx1\r\nDelivered-To: support@h.example\r\n\
                   From: A <a@acme.example>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\nSubject: Help\r\n\
                   Message-ID: <m1@acme.example>\r\n\r\nbody\r\n";
        let two = "Received: from mx2\r\nReceived: from mx3\r\nX-Original-To: billing@h.example\r\n\
                   Delivered-To: billing@h.example\r\nFrom: A <a@acme.example>\r\n\
                   Date: Mon, 23 Nov 2026 09:00:00 +0000\r\nSubject:  Help\r\nMessage-ID: <m1@acme.example>\r\n\r\nbody\r\n\r\n";
        let lf = one.replace("\r\n", "\n");
        let mbox = format!("From a@acme.example Mon Nov 23 09:00:00 2026\n{lf}");
        let d = content_digest(one.as_bytes());
        for other in [two.to_owned(), lf, mbox] {
            assert_eq!(content_digest(other.as_bytes()), d, "{other:?}");
        }
        for changed in [
            one.replace("body", "other body"),
            one.replace("Subject: Help", "Subject: Help!"),
            one.replace("From: A <a@", "From: A <b@"),
            one.replace("09:00:00", "09:00:01"),
        ] {
            assert_ne!(content_digest(changed.as_bytes()), d, "{changed:?}");
        }
    }

    /// Digests are stored: the same bytes must digest the same in every version.
    #[test]
    fn digests_stay_what_they_were() {
        let head = "From: A <a@acme.example>\r\nSubject: Help\r\n\r\n";
        let cases = [
            (
                format!("{head}Line one\r\n  \r\nLine two  \r\n\r\n \t\r\n"),
                "f56d693c138d92f67c5b742cff0e59b086e7ab828aba8340cfffcf72e0b36b83",
            ),
            (format!("{head} \r\n\r\n"), "7369ef50ebd5f4ef274267ab213006917ab0ed2757ec3d703c9ce7817e24d41e"),
            (
                format!("{head}no newline at the end"),
                "4f5b0e4a8f1e270700e17b7e5f6df01050a81dc4196f4522a1e5946f1b430606",
            ),
            (head.to_owned(), "7369ef50ebd5f4ef274267ab213006917ab0ed2757ec3d703c9ce7817e24d41e"),
        ];
        for (raw, digest) in cases {
            assert_eq!(content_digest(raw.as_bytes()), digest, "{raw:?}");
        }
    }

    #[test]
    fn keys() {
        assert_eq!(message_key(Some("m@x"), "ab"), "mid:m@x;ab");
        assert_eq!(message_key(None, "ab"), "digest:ab");
    }
}
