//! Charsets: legacy 8-bit text in header fields (GBK, Shift_JIS, EUC-KR, KOI8-R,
//! Windows-1251, ISO-8859-1 … written raw, without RFC 2047) decoded as the sender wrote
//! it: with the charset the message's text part declares, else with the one chardetng
//! (the detector Firefox uses) finds. Pure.

use encoding_rs::{Encoding, ISO_2022_JP, UTF_8};

use super::bounds::{self, Shape};

/// The encoding of a charset label, or `None` for an unknown one.
pub fn encoding(label: &str) -> Option<&'static Encoding> {
    Encoding::for_label(label.trim().trim_matches('"').as_bytes())
}

/// Whether a header field holds ISO-2022-JP escape sequences (7-bit, so valid UTF-8,
/// but not text until decoded).
fn has_iso_2022_jp_escapes(bytes: &[u8]) -> bool {
    bytes.windows(3).any(|w| matches!(w, [0x1b, b'$', b'B' | b'@'] | [0x1b, b'(', b'J' | b'B']))
}

fn needs_decoding(field: &[u8]) -> bool {
    std::str::from_utf8(field).is_err() || has_iso_2022_jp_escapes(field)
}

/// The one encoding for the legacy header bytes of a message: the text part's declared
/// charset when every such field decodes with it without error, else chardetng's guess.
fn choose(fields: &[&[u8]], declared: Option<&str>) -> &'static Encoding {
    let informative = declared.and_then(encoding).filter(|e| *e != UTF_8 && e.name() != "windows-1252");
    let fits = |e: &'static Encoding| {
        fields.iter().all(|f| e.decode_without_bom_handling_and_without_replacement(f).is_some())
    };
    if let Some(e) = informative.filter(|e| fits(e)) {
        return e;
    }
    let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Allow);
    for field in fields {
        detector.feed(field, false);
        detector.feed(b"\n", false);
    }
    detector.feed(b"", true);
    let guess = detector.guess(None, chardetng::Utf8Detection::Deny);
    match informative {
        Some(e) if !fits(guess) => e,
        _ => guess,
    }
}

/// `raw` with every header field that holds legacy bytes decoded to UTF-8, and the new
/// end of the message's own header section; `None` when nothing needed decoding.
pub fn transcode_headers(raw: &[u8], shape: &Shape) -> Option<(Vec<u8>, usize)> {
    let legacy: Vec<&[u8]> = shape
        .sections
        .iter()
        .flat_map(|s| bounds::fields(&raw[s.clone()]))
        .map(|f| f.bytes)
        .filter(|f| needs_decoding(f))
        .collect();
    if legacy.is_empty() {
        return None;
    }
    let eight_bit: Vec<&[u8]> = legacy.iter().copied().filter(|f| std::str::from_utf8(f).is_err()).collect();
    let chosen = choose(&eight_bit, shape.text_charset.as_deref());
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 4);
    let mut copied = 0;
    let mut top_end = shape.sections.first().map_or(0, |s| s.end);
    for (i, section) in shape.sections.iter().enumerate() {
        out.extend_from_slice(&raw[copied..section.start]);
        for field in bounds::fields(&raw[section.clone()]) {
            if !needs_decoding(field.bytes) {
                out.extend_from_slice(field.bytes);
            } else {
                let encoding = if std::str::from_utf8(field.bytes).is_ok() { ISO_2022_JP } else { chosen };
                let (text, _, _) = encoding.decode(field.bytes);
                out.extend_from_slice(text.as_bytes());
            }
        }
        copied = section.end;
        if i == 0 {
            top_end = out.len();
        }
    }
    out.extend_from_slice(&raw[copied..]);
    Some((out, top_end))
}

/// Bytes in a named charset as text (U+FFFD only where the bytes do not fit it); an
/// unknown or missing charset is detected.
pub fn decode(bytes: &[u8], charset: Option<&str>) -> String {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if !has_iso_2022_jp_escapes(bytes) {
            return text.to_owned();
        }
    }
    let encoding = charset.and_then(encoding).unwrap_or_else(|| choose(&[bytes], None));
    encoding.decode_without_bom_handling(bytes).0.into_owned()
}

/// A MIME parameter split into RFC 2231 sections (`filename*0*=`, `filename*1=` …),
/// joined as bytes first and only then decoded, so that a stateful charset such as
/// ISO-2022-JP decodes as one string. `None` when the parameter has no numbered sections.
pub fn rfc2231_parameter(header_value: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(header_value);
    let mut pieces: Vec<(u32, bool, String)> = Vec::new();
    let mut in_quotes = false;
    let mut param = String::new();
    let mut params = Vec::new();
    for c in text.chars() {
        match c {
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => params.push(std::mem::take(&mut param)),
            '\r' | '\n' => {}
            _ => param.push(c),
        }
    }
    params.push(param);
    let prefix = format!("{}*", name.to_ascii_lowercase());
    for param in &params {
        let Some((key, value)) = param.split_once('=') else { continue };
        let key = key.trim().to_ascii_lowercase();
        let Some(section) = key.strip_prefix(&prefix) else { continue };
        let (number, extended) = match section.strip_suffix('*') {
            Some(n) => (n, true),
            None => (section, false),
        };
        let Ok(number) = number.parse::<u32>() else { continue };
        pieces.push((number, extended, value.trim().to_owned()));
    }
    if pieces.is_empty() || pieces.len() > 1000 {
        return None;
    }
    pieces.sort_by_key(|p| p.0);
    let mut charset = None;
    let mut bytes = Vec::new();
    for (number, extended, value) in &pieces {
        let mut value = value.as_str();
        if *extended && *number == 0 {
            let mut parts = value.splitn(3, '\'');
            if let (Some(cs), Some(_lang), Some(rest)) = (parts.next(), parts.next(), parts.next()) {
                charset = Some(cs.to_owned()).filter(|c| !c.is_empty());
                value = rest;
            }
        }
        if *extended {
            bytes.extend(percent_decode(value.as_bytes()));
        } else {
            bytes.extend_from_slice(value.as_bytes());
        }
    }
    Some(decode(&bytes, charset.as_deref()))
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcoded(raw: &[u8]) -> String {
        let shape = bounds::scan(raw).unwrap();
        String::from_utf8(transcode_headers(raw, &shape).expect("transcoded").0).unwrap()
    }

    #[test]
    fn legacy_header_bytes_are_decoded() {
        let (gbk, _, _) = encoding_rs::GBK.encode("打印机坏了，请尽快修理");
        let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode("プリンターが故障しました。至急修理をお願いします");
        let (euc_kr, _, _) = encoding_rs::EUC_KR.encode("프린터가 고장났습니다. 빨리 고쳐 주세요");
        let (koi8, _, _) = encoding_rs::KOI8_R.encode("Принтер сломался, пожалуйста, почините");
        let (cp1251, _, _) = encoding_rs::WINDOWS_1251.encode("Принтер сломался, пожалуйста, почините");
        let (latin1, _, _) = encoding_rs::WINDOWS_1252.encode("Drucker kaputt, bitte schnell reparieren, Grüße");
        let cases: [(&[u8], &str); 6] = [
            (&gbk, "打印机坏了，请尽快修理"),
            (&sjis, "プリンターが故障しました。至急修理をお願いします"),
            (&euc_kr, "프린터가 고장났습니다. 빨리 고쳐 주세요"),
            (&koi8, "Принтер сломался, пожалуйста, почините"),
            (&cp1251, "Принтер сломался, пожалуйста, почините"),
            (&latin1, "Drucker kaputt, bitte schnell reparieren, Grüße"),
        ];
        for (bytes, want) in cases {
            let mut raw = b"From: a@b.example\r\nSubject: ".to_vec();
            raw.extend_from_slice(bytes);
            raw.extend_from_slice(b"\r\n\r\nbody\r\n");
            assert!(transcoded(&raw).contains(&format!("Subject: {want}\r\n")), "{want}: {}", transcoded(&raw));
        }
    }

    #[test]
    fn the_text_parts_charset_wins_when_it_fits() {
        // Two bytes that chardetng alone could read in several ways.
        let (koi8, _, _) = encoding_rs::KOI8_R.encode("Привет");
        let mut raw = b"From: a@b.example\r\nSubject: ".to_vec();
        raw.extend_from_slice(&koi8);
        raw.extend_from_slice(b"\r\nContent-Type: text/plain; charset=koi8-r\r\n\r\nbody\r\n");
        assert!(transcoded(&raw).contains("Subject: Привет\r\n"));
    }

    #[test]
    fn utf8_and_ascii_headers_are_left_alone() {
        let raw = "From: Jörg <a@b.example>\r\nSubject: Grüße\r\n\r\nbody".as_bytes();
        assert!(transcode_headers(raw, &bounds::scan(raw).unwrap()).is_none());
    }

    #[test]
    fn raw_iso_2022_jp_is_decoded() {
        let (jis, _, _) = ISO_2022_JP.encode("至急");
        let mut raw = b"From: a@b.example\r\nSubject: ".to_vec();
        raw.extend_from_slice(&jis);
        raw.extend_from_slice(b"\r\n\r\nbody\r\n");
        assert!(transcoded(&raw).contains("Subject: 至急\r\n"));
        assert_eq!(decode(&jis, Some("iso-2022-jp")), "至急");
    }

    #[test]
    fn rfc2231_sections_are_joined_before_decoding() {
        let value = b" inline;\r\n filename*0*=ISO-2022-JP'ja'%1b$B%3f7$7$$%25F%25%2d%259%25H%1b%28B;\r\n \
            filename*1*=%20;\r\n filename*2*=%1b$B%25I%25%2d%25e%25a%25s%25H%1b%28B;\r\n filename*3=.txt";
        assert_eq!(rfc2231_parameter(value, "filename").as_deref(), Some("新しいテキスト ドキュメント.txt"));
        let utf8 = b"attachment; filename*0*=UTF-8''R%C3%A9sum; filename*1=\"\xc3\xa9.pdf\"";
        assert_eq!(rfc2231_parameter(utf8, "filename").as_deref(), Some("Résumé.pdf"));
        assert_eq!(rfc2231_parameter(b"attachment; filename=\"a.txt\"", "filename"), None);
        assert_eq!(rfc2231_parameter(b"attachment; filename*=UTF-8''a.txt", "filename"), None);
    }
}
