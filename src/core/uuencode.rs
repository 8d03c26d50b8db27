//! uuencode: files sent the pre-MIME way, as `begin 644 name` … `end` blocks in the text
//! or in an `x-uuencode` part, become attachments. Pure; a malformed block stays text.

/// A file found in a text.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub name: String,
    pub content: Vec<u8>,
}

/// At most this many blocks are taken from one text; the rest stays text.
const MAX_FILES: usize = 100;

/// The `name` of a `begin 644 name` line.
fn begin_line(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("begin ")?;
    let (mode, name) = rest.split_once(' ')?;
    let octal = (3..=4).contains(&mode.len()) && mode.bytes().all(|b| (b'0'..=b'7').contains(&b));
    let name = name.trim();
    (octal && !name.is_empty()).then_some(name)
}

/// One encoded line, or `None` when it is not one.
fn decode_line(line: &str, out: &mut Vec<u8>) -> Option<()> {
    let bytes = line.as_bytes();
    let value = |b: u8| -> Option<u8> { b.checked_sub(32).filter(|v| *v <= 64).map(|v| v & 63) };
    let len = value(*bytes.first()?)? as usize;
    let groups = len.div_ceil(3);
    let data = &bytes[1..];
    if data.len() < groups * 4 {
        // Some encoders drop trailing spaces: pad them back.
        if data.len() + 4 < groups * 4 {
            return None;
        }
    }
    let get = |i: usize| data.get(i).map_or(Some(0), |&b| value(b));
    let mut decoded = Vec::with_capacity(groups * 3);
    for g in 0..groups {
        let (a, b, c, d) = (get(g * 4)?, get(g * 4 + 1)?, get(g * 4 + 2)?, get(g * 4 + 3)?);
        decoded.extend([(a << 2) | (b >> 4), (b << 4) | (c >> 2), (c << 6) | d]);
    }
    decoded.truncate(len);
    out.extend(decoded);
    Some(())
}

/// The text without its uuencoded blocks, and the files they held.
pub fn extract(text: &str) -> (String, Vec<File>) {
    if !text.contains("begin ") {
        return (text.to_owned(), Vec::new());
    }
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut kept = String::with_capacity(text.len());
    let mut files = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end_matches(['\r', '\n']);
        let Some(name) = begin_line(line).filter(|_| files.len() < MAX_FILES) else {
            kept.push_str(lines[i]);
            i += 1;
            continue;
        };
        let mut content = Vec::new();
        let mut end = None;
        for (j, body) in lines.iter().enumerate().skip(i + 1) {
            let body = body.trim_end_matches(['\r', '\n']);
            if body == "end" {
                end = Some(j);
                break;
            }
            if body.is_empty() || body == "`" {
                continue;
            }
            if decode_line(body, &mut content).is_none() {
                break;
            }
        }
        match end {
            Some(j) => {
                files.push(File { name: name.to_owned(), content });
                i = j + 1;
            }
            None => {
                kept.push_str(lines[i]);
                i += 1;
            }
        }
    }
    (kept, files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny encoder for the tests (the format is old and simple).
    fn encode(data: &[u8]) -> String {
        let c = |v: u8| if v == 0 { '`' } else { (v + 32) as char };
        let mut out = String::new();
        for chunk in data.chunks(45) {
            out.push(c(chunk.len() as u8));
            for g in chunk.chunks(3) {
                let (a, b, d) = (g[0], *g.get(1).unwrap_or(&0), *g.get(2).unwrap_or(&0));
                out.extend([c(a >> 2), c(((a << 4) | (b >> 4)) & 63), c(((b << 2) | (d >> 6)) & 63), c(d & 63)]);
            }
            out.push('\n');
        }
        out + "`\n"
    }

    #[test]
    fn blocks_become_files() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let text = format!("Hello,\nthe log:\n\nbegin 644 server log.bin\n{}end\n\nBye\n", encode(&data));
        let (kept, files) = extract(&text);
        assert_eq!(kept, "Hello,\nthe log:\n\n\nBye\n");
        assert_eq!(files, vec![File { name: "server log.bin".to_owned(), content: data }]);
    }

    #[test]
    fn malformed_blocks_stay_text() {
        let cases =
            ["begin 644 a.txt\nM86)C\n", "begin here we go\nend\n", "begin 644 x\n#\u{e9}\u{e9}\u{e9}\u{e9}\nend\n"];
        for text in cases {
            assert_eq!(extract(text).0, text, "{text:?}");
        }
    }
}
