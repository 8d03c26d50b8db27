//! Ticket numbers: `YYYYMMDD` + a 7-digit daily sequence + a Damm check digit, e.g.
//! `2026112310000017`. Human-quotable, sortable by day, and any single mistyped digit
//! or swapped neighbouring pair is caught by the check digit. Pure.

use chrono::NaiveDate;

/// Damm's quasigroup table: detects all single-digit errors and adjacent transpositions.
const DAMM: [[u8; 10]; 10] = [
    [0, 3, 1, 7, 5, 9, 8, 6, 4, 2],
    [7, 0, 9, 2, 1, 5, 4, 8, 6, 3],
    [4, 2, 0, 6, 8, 7, 1, 3, 5, 9],
    [1, 7, 5, 0, 9, 8, 3, 4, 2, 6],
    [6, 1, 2, 3, 0, 4, 5, 9, 7, 8],
    [3, 6, 7, 4, 2, 0, 9, 5, 8, 1],
    [5, 8, 6, 9, 7, 2, 0, 1, 3, 4],
    [8, 9, 4, 5, 3, 6, 2, 0, 1, 7],
    [9, 4, 3, 8, 6, 1, 7, 2, 0, 5],
    [2, 5, 8, 1, 4, 3, 6, 7, 9, 0],
];

/// The daily sequence is offset so that it never starts with zeros.
const SEQ_BASE: u32 = 1_000_000;
pub const MAX_PER_DAY: u32 = 8_999_999;

fn check_digit(digits: &str) -> u8 {
    digits.bytes().fold(0u8, |interim, b| DAMM[interim as usize][(b - b'0') as usize])
}

/// The number of the `seq`-th ticket (1-based) created on `day`.
pub fn format(day: NaiveDate, seq: u32) -> String {
    let body = format!("{}{:07}", day.format("%Y%m%d"), SEQ_BASE + seq);
    let check = check_digit(&body);
    format!("{body}{check}")
}

/// Whether `text` is a well-formed ticket number with a correct check digit.
pub fn is_valid(text: &str) -> bool {
    text.len() == 16 && text.bytes().all(|b| b.is_ascii_digit()) && check_digit(text) == 0
}

/// The subject tag for a number, e.g. `[Ticket#2026112310000017]`.
pub fn tag(prefix: &str, number: &str) -> String {
    format!("[{prefix}{number}]")
}

/// Every valid ticket number tagged in a subject, in order of appearance. Linear in the
/// subject's length: a tag's closing `]` is looked for only within the few bytes a
/// number (with white space around it) can take.
pub fn find_tags(subject: &str, prefix: &str) -> Vec<String> {
    const MAX_INNER: usize = 24;
    let opener = format!("[{prefix}");
    let mut found = Vec::new();
    let mut rest = subject;
    while let Some(start) = rest.find(&opener) {
        rest = &rest[start + opener.len()..];
        let window = &rest.as_bytes()[..rest.len().min(MAX_INNER + 1)];
        if let Some(end) = window.iter().position(|&b| b == b']') {
            let candidate = rest[..end].trim();
            if is_valid(candidate) && !found.iter().any(|f| f == candidate) {
                found.push(candidate.to_owned());
            }
        }
    }
    found
}

/// The subject without its ticket tags: what a form's user typed is a new ticket's
/// subject, never a way into another ticket.
pub fn strip_tags(subject: &str, prefix: &str) -> String {
    let mut clean = subject.to_owned();
    for number in find_tags(subject, prefix) {
        clean = clean.replace(&tag(prefix, &number), " ");
    }
    match find_tags(&clean, prefix).is_empty() {
        true => clean.split_whitespace().collect::<Vec<_>>().join(" "),
        // A tag written with white space inside: its opener goes, so that nothing is one.
        false => strip_tags(&clean.replace(&format!("[{prefix}"), "["), prefix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
    }

    #[test]
    fn numbers_are_valid_and_distinct() {
        let a = format(day(), 1);
        let b = format(day(), 2);
        assert_eq!(&a[..15], "202611231000001");
        assert!(is_valid(&a) && is_valid(&b));
        assert_ne!(a, b);
    }

    #[test]
    fn check_digit_catches_typos() {
        let n = format(day(), 17);
        for i in 0..n.len() {
            let mut bytes = n.clone().into_bytes();
            bytes[i] = b'0' + (bytes[i] - b'0' + 1) % 10;
            assert!(!is_valid(std::str::from_utf8(&bytes).unwrap()), "single-digit error at {i}");
        }
        for i in 0..n.len() - 1 {
            let mut bytes = n.clone().into_bytes();
            if bytes[i] != bytes[i + 1] {
                bytes.swap(i, i + 1);
                assert!(!is_valid(std::str::from_utf8(&bytes).unwrap()), "transposition at {i}");
            }
        }
    }

    #[test]
    fn tags_in_subjects() {
        let n = format(day(), 5);
        let cases = [
            (format!("Re: [Ticket#{n}] Printer"), vec![n.clone()]),
            (format!("AW: AW: [Ticket# {n} ] Printer"), vec![n.clone()]),
            (format!("Fwd: [Ticket#{n}]"), vec![n.clone()]),
            ("Re: [Ticket#2026112310000010] typo".to_owned(), vec![]),
            ("[Ticket#] nothing".to_owned(), vec![]),
            ("no tag at all".to_owned(), vec![]),
        ];
        for (subject, want) in cases {
            assert_eq!(find_tags(&subject, "Ticket#"), want, "{subject}");
        }
        assert_eq!(tag("Ticket#", &n), format!("[Ticket#{n}]"));
    }

    #[test]
    fn tags_are_stripped_from_a_subject_in_any_spelling() {
        let (a, b) = (format(day(), 5), format(day(), 6));
        for (subject, want) in [
            (format!("Re: [Ticket#{a}] Printer [Ticket#{b}]"), "Re: Printer".to_owned()),
            (format!("AW: [Ticket# {a} ] Printer"), format!("AW: [ {a} ] Printer")),
            ("Re: [Ticket#2026112310000010] typo".to_owned(), "Re: [Ticket#2026112310000010] typo".to_owned()),
            ("plain".to_owned(), "plain".to_owned()),
        ] {
            let stripped = strip_tags(&subject, "Ticket#");
            assert_eq!(stripped, want, "{subject}");
            assert!(find_tags(&stripped, "Ticket#").is_empty());
        }
    }

    /// `[Ticket#` repeated without `]` once took time quadratic in its length.
    #[test]
    fn tag_search_is_linear() {
        let n = format(day(), 5);
        for hostile in ["[Ticket#".repeat(1 << 20), format!("{}]", "[Ticket#".repeat(1 << 20))] {
            let subject = format!("{hostile}[Ticket#{n}]");
            let started = std::time::Instant::now();
            assert_eq!(find_tags(&subject, "Ticket#"), vec![n.clone()]);
            assert!(started.elapsed() < std::time::Duration::from_secs(10), "quadratic: {:?}", started.elapsed());
        }
    }
}
