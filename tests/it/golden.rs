//! Golden tests: every message in `fixtures/mail/` runs through the whole pipeline (in
//! name order, into one in-memory store, at a fixed time); what was parsed, classified,
//! routed and resolved is compared with `fixtures/expected/NAME.json`.
//! `UPDATE_EXPECT=1 cargo test golden` rewrites the expectations.

use chrono::{TimeZone, Utc};
use postdesk::config;
use postdesk::core::parse;
use postdesk::desk::ingest::{self, Source};
use postdesk::store::Store;
use serde_json::{json, Value};

use crate::harness::{repo_path, Dir};

fn fixtures() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(repo_path("fixtures/mail"))
        .expect("fixtures/mail")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "expected the fixtures, found {}", files.len());
    files
}

/// A compact, stable picture of what the pipeline made of one message.
fn describe(raw: &[u8], report: &ingest::Report) -> Value {
    let parsed = parse::parse(raw, "X-Postdesk-Loop").ok().map(|m| {
        json!({
            "message_id": m.message_id,
            "from": m.from,
            "reply_to": m.reply_to,
            "to": m.to,
            "subject": m.subject,
            "date": m.date,
            "in_reply_to": m.in_reply_to,
            "references": m.references,
            "text_body_start": m.text_body.trim().chars().take(120).collect::<String>(),
            "has_html": m.html_body.is_some(),
            "attachments": m.attachments,
        })
    });
    json!({ "parsed": parsed, "report": report })
}

#[test]
fn golden() {
    let dir = Dir::new("[ingest]\nmax_message_bytes = 32768\nauthserv_id = \"mx.helpdesk.example\"\n");
    let config = config::load(Some(&dir.config()), None).expect("config");
    let mut store = Store::open_in_memory().expect("store");
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut mismatches = Vec::new();
    for path in fixtures() {
        let raw = std::fs::read(&path).expect("read fixture");
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let source = Source::file(&name, &raw);
        let report =
            ingest::ingest_one_with_random(&mut store, &config, &raw, &source, now, stable_random).expect("ingest");
        let got = serde_json::to_string_pretty(&describe(&raw, &report)).unwrap() + "\n";
        let expected_path = repo_path(&format!("fixtures/expected/{name}.json"));
        if update {
            std::fs::write(&expected_path, &got).expect("write expectation");
        } else if std::fs::read_to_string(&expected_path).ok().as_deref() != Some(got.as_str()) {
            mismatches.push(format!("{name}: got\n{got}"));
        }
    }
    assert!(mismatches.is_empty(), "golden mismatches (UPDATE_EXPECT=1 to accept):\n{}", mismatches.join("\n"));
}

/// The random part of our Message-IDs, made of the message itself, so that
/// expectations are stable and a fixture can quote the Message-ID of an acknowledgement
/// an earlier fixture caused.
fn stable_random(source: &Source) -> Result<[u8; 16], postdesk::store::StoreError> {
    let hash = parse::content_hash(source.identity.as_bytes());
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hash[2 * i..2 * i + 2], 16).expect("hex");
    }
    Ok(bytes)
}

/// Every LF of a message as CRLF, or the reverse, byte for byte (fixtures need not be UTF-8).
fn with_line_endings(raw: &[u8], crlf: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\r' && raw.get(i + 1) == Some(&b'\n') {
            continue;
        }
        if b == b'\n' && crlf {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// The same message with CRLF and with LF line endings parses the same way.
#[test]
fn line_endings_do_not_matter() {
    for path in fixtures() {
        let raw = std::fs::read(&path).expect("read fixture");
        let (lf, crlf) = (with_line_endings(&raw, false), with_line_endings(&raw, true));
        let name = path.display();
        let (a, b) = match (parse::parse(&lf, "X-Loop"), parse::parse(&crlf, "X-Loop")) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(a), Err(b)) => {
                assert_eq!(a, b, "{name}");
                continue;
            }
            (a, b) => panic!("{name}: LF {:?}, CRLF {:?}", a.err(), b.err()),
        };
        assert_eq!((&a.message_id, &a.from, &a.subject), (&b.message_id, &b.from, &b.subject), "{name}");
        assert_eq!(a.text_body.replace("\r\n", "\n").trim(), b.text_body.replace("\r\n", "\n").trim(), "{name}");
        let names = |m: &parse::Inbound| m.attachments.iter().map(|x| x.filename.clone()).collect::<Vec<_>>();
        assert_eq!(names(&a), names(&b), "{name}");
    }
}
