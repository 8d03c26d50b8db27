//! HTML as text, for mail that has no text part: paragraphs, headings, rows and list
//! items on lines of their own (`- item`, `1. item`), links as `text <url>`, no scripts,
//! styles or head. Pure; linear in the input; never panics.

/// Elements whose start and end break the line.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "center",
    "dd",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "header",
    "hr",
    "main",
    "nav",
    "ol",
    "pre",
    "section",
    "table",
    "tbody",
    "thead",
    "tfoot",
    "tr",
    "ul",
];
/// Elements that stand apart by a blank line.
const PARAGRAPHS: &[&str] = &["p", "h1", "h2", "h3", "h4", "h5", "h6"];
/// Elements whose content is not text.
const HIDDEN: &[&str] = &["head", "script", "style", "template", "title", "noscript"];

/// Open links and lists followed at once; deeper ones render as plain text.
const MAX_OPEN: usize = 64;

struct Renderer {
    out: String,
    space: bool,
    hidden: usize,
    pre: usize,
    /// One entry per open list: `Some(n)` for the next number of an `<ol>`.
    lists: Vec<Option<u32>>,
    /// Open links: the target and where their text starts in `out`.
    links: Vec<(String, usize)>,
    cells: usize,
}

impl Renderer {
    fn newlines(&mut self, n: usize) {
        while self.out.ends_with(' ') {
            self.out.pop();
        }
        if self.out.is_empty() {
            return;
        }
        let have = self.out.chars().rev().take_while(|&c| c == '\n').count();
        for _ in have..n {
            self.out.push('\n');
        }
        self.space = false;
    }

    fn text(&mut self, text: &str) {
        if self.hidden > 0 || text.is_empty() {
            return;
        }
        let text = decode_entities(text);
        if self.pre > 0 {
            self.out.push_str(&text);
            return;
        }
        for (i, word) in text.split(|c: char| c.is_whitespace() && c != '\u{a0}').enumerate() {
            if i > 0 {
                self.space = true;
            }
            if word.is_empty() {
                continue;
            }
            if self.space && !self.out.is_empty() && !self.out.ends_with(['\n', ' ']) {
                self.out.push(' ');
            }
            self.space = false;
            self.out.push_str(&word.replace('\u{a0}', " "));
        }
    }

    fn tag(&mut self, tag: &str) {
        let closing = tag.starts_with('/');
        let body = tag.trim_start_matches('/');
        let name_end = body.find(|c: char| c.is_whitespace() || c == '/').unwrap_or(body.len());
        // Tag names are short: lower-cased on the stack; a longer one is no tag we know.
        let mut buf = [0u8; 12];
        let raw_name = &body.as_bytes()[..name_end];
        if raw_name.len() > buf.len() {
            return;
        }
        buf[..raw_name.len()].copy_from_slice(raw_name);
        buf.make_ascii_lowercase();
        let Ok(name) = std::str::from_utf8(&buf[..raw_name.len()]) else { return };
        if HIDDEN.contains(&name) {
            self.hidden = if closing { self.hidden.saturating_sub(1) } else { self.hidden + 1 };
            return;
        }
        if self.hidden > 0 {
            return;
        }
        match name {
            "br" => {
                self.out.push('\n');
                self.space = false;
            }
            "li" if !closing => {
                self.newlines(1);
                let marker = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        *n += 1;
                        format!("{}. ", *n - 1)
                    }
                    _ => "- ".to_owned(),
                };
                self.out.push_str(&"  ".repeat(self.lists.len().saturating_sub(1)));
                self.out.push_str(&marker);
            }
            "li" => self.newlines(1),
            "ul" | "ol" => {
                if closing {
                    self.lists.pop();
                } else if self.lists.len() < MAX_OPEN {
                    self.lists.push((name == "ol").then_some(1));
                }
                self.newlines(1);
            }
            "td" | "th" if !closing => {
                if self.cells > 0 {
                    self.out.push('\t');
                }
                self.cells += 1;
            }
            "tr" => {
                self.cells = 0;
                self.newlines(1);
            }
            "pre" => {
                self.pre = if closing { self.pre.saturating_sub(1) } else { self.pre + 1 };
                self.newlines(1);
            }
            "a" if !closing && self.links.len() < MAX_OPEN => {
                self.links.push((attribute(body, "href").unwrap_or_default(), self.out.len()))
            }
            "a" => {
                if let Some((href, start)) = self.links.pop() {
                    let text = self.out.get(start..).unwrap_or("").trim().to_owned();
                    let shown = href.strip_prefix("mailto:").unwrap_or(&href);
                    let linkable =
                        href.starts_with("http://") || href.starts_with("https://") || href.starts_with("mailto:");
                    if linkable && text != shown && text != href {
                        if text.is_empty() {
                            self.out.push_str(shown);
                        } else {
                            self.out.push_str(&format!(" <{shown}>"));
                        }
                    }
                }
            }
            "img" => {
                if let Some(alt) = attribute(body, "alt").filter(|a| !a.trim().is_empty()) {
                    self.text(&format!(" [{alt}] "));
                }
            }
            n if PARAGRAPHS.contains(&n) => self.newlines(2),
            n if BLOCKS.contains(&n) => self.newlines(1),
            _ => {}
        }
    }
}

/// An attribute's value from the inside of a tag, entities decoded.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name) {
        let at = from + i;
        from = at + name.len();
        let before_ok = lower[..at].ends_with(|c: char| c.is_whitespace());
        let rest = lower[from..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let value_start = tag.len() - rest.len() + 1;
        let value = tag[value_start..].trim_start();
        let value = match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or(""),
            _ => value.split(|c: char| c.is_whitespace() || c == '>').next().unwrap_or(""),
        };
        return Some(decode_entities(value.trim()).into_owned());
    }
    None
}

/// Named entities common in mail, and every numeric one.
fn decode_entities(text: &str) -> std::borrow::Cow<'_, str> {
    const NAMED: &[(&str, &str)] = &[
        ("amp", "&"),
        ("lt", "<"),
        ("gt", ">"),
        ("quot", "\""),
        ("apos", "'"),
        ("nbsp", "\u{a0}"),
        ("copy", "©"),
        ("reg", "®"),
        ("trade", "™"),
        ("hellip", "…"),
        ("mdash", "—"),
        ("ndash", "–"),
        ("lsquo", "‘"),
        ("rsquo", "’"),
        ("ldquo", "“"),
        ("rdquo", "”"),
        ("laquo", "«"),
        ("raquo", "»"),
        ("bull", "•"),
        ("middot", "·"),
        ("euro", "€"),
        ("pound", "£"),
        ("yen", "¥"),
        ("deg", "°"),
        ("auml", "ä"),
        ("ouml", "ö"),
        ("uuml", "ü"),
        ("Auml", "Ä"),
        ("Ouml", "Ö"),
        ("Uuml", "Ü"),
        ("szlig", "ß"),
        ("eacute", "é"),
        ("egrave", "è"),
        ("ecirc", "ê"),
        ("agrave", "à"),
        ("aacute", "á"),
        ("ccedil", "ç"),
        ("oacute", "ó"),
        ("iacute", "í"),
        ("uacute", "ú"),
        ("ntilde", "ñ"),
        ("Eacute", "É"),
    ];
    if !text.contains('&') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest.as_bytes()[1..].iter().take(10).position(|&b| b == b';').map(|e| e + 1);
        let decoded = end.and_then(|end| {
            let entity = &rest[1..end];
            let numeric = entity.strip_prefix('#').and_then(|n| match n.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => n.parse().ok(),
            });
            let text = match numeric {
                Some(code) => char::from_u32(code).filter(|c| !c.is_control() || *c == '\n').map(String::from),
                None => NAMED.iter().find(|(n, _)| *n == entity).map(|(_, v)| (*v).to_owned()),
            }?;
            Some((text, end + 1))
        });
        match decoded {
            Some((text, len)) => {
                out.push_str(&text);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out.into()
}

/// The text of an HTML document.
pub fn to_text(html: &str) -> String {
    let mut r = Renderer {
        out: String::new(),
        space: false,
        hidden: 0,
        pre: 0,
        lists: Vec::new(),
        links: Vec::new(),
        cells: 0,
    };
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        r.text(&rest[..lt]);
        rest = &rest[lt..];
        if let Some(comment) = rest.strip_prefix("<!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        let starts_tag = rest[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '/' || c == '!');
        if !starts_tag {
            r.text("<");
            rest = &rest[1..];
            continue;
        }
        // The tag ends at the first `>` outside quotes.
        let mut quote = None;
        let mut end = None;
        for (i, c) in rest.char_indices().skip(1) {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '>') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else { break };
        let tag = &rest[1..end];
        if !tag.starts_with('!') {
            r.tag(tag);
        }
        rest = &rest[end + 1..];
    }
    if !rest.starts_with('<') {
        r.text(rest);
    }
    let lines: Vec<&str> = r.out.lines().map(str::trim_end).collect();
    let mut text = String::with_capacity(r.out.len());
    let mut blank = 0;
    for line in lines {
        blank = if line.trim().is_empty() { blank + 1 } else { 0 };
        if blank <= 1 {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_is_kept() {
        let cases = [
            ("<p>Hello &amp; <b>welcome</b></p><p>Second</p>", "Hello & welcome\n\nSecond"),
            ("<ul><li>one</li><li>two</li></ul>after", "- one\n- two\nafter"),
            ("<ol><li>first<li>second</ol>", "1. first\n2. second"),
            (
                "See <a href=\"https://acme.example/x?a=1&amp;b=2\">the page</a>.",
                "See the page <https://acme.example/x?a=1&b=2>.",
            ),
            ("<a href='https://acme.example'>https://acme.example</a>", "https://acme.example"),
            ("Mail <a href=\"mailto:bob@acme.example\">Bob</a>", "Mail Bob <bob@acme.example>"),
            ("<head><title>T</title><style>p {}</style></head><body>Body<script>x()</script></body>", "Body"),
            ("line<br>next<br/>last", "line\nnext\nlast"),
            ("<div>a</div><div>b</div>", "a\nb"),
            ("<table><tr><td>k</td><td>v</td></tr><tr><td>k2</td><td>v2</td></tr></table>", "k\tv\nk2\tv2"),
            ("<!-- hidden --><h1>Title</h1>text", "Title\n\ntext"),
            ("a &lt; b &#38; c &#x263A; &unknown; &", "a < b & c ☺ &unknown; &"),
            ("<pre>  keep\n  spaces</pre>", "keep\n  spaces"),
            ("x < y and <unclosed", "x < y and"),
        ];
        for (html, want) in cases {
            assert_eq!(to_text(html), want, "{html}");
        }
    }

    #[test]
    fn hostile_html_is_linear() {
        let html = "<a href=\"x\">".repeat(100_000) + &"<".repeat(100_000) + &"&#".repeat(100_000);
        let started = std::time::Instant::now();
        let _ = to_text(&html);
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "quadratic: {:?}", started.elapsed());
    }
}
