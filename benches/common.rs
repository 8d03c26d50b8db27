//! What the benchmarks share: a generated ~8 KB customer message.

/// Message `i` of a benchmark run: ~8 KB, from one of 200 sender domains; every fifth
/// answers the same sender's message sent 2,000 earlier (a follow-up: only people on a
/// ticket may write into it).
pub fn message(i: usize) -> Vec<u8> {
    const DOMAINS: usize = 200;
    let domain = i % DOMAINS;
    let sender = (i / DOMAINS) % 10;
    let host = if domain.is_multiple_of(20) { "gmail.com".to_owned() } else { format!("mail.company{domain}.com") };
    let reply =
        if i % 5 == 4 && i >= 2000 { format!("In-Reply-To: <m{}@bench.example>\r\n", i - 2000) } else { String::new() };
    let line = "The printer on the third floor shows error 0x42 again after the firmware update. \r\n";
    let body = line.repeat(7_600 / line.len() + 1);
    format!(
        "From: User {sender} <user{sender}@{host}>\r\nTo: support@helpdesk.example\r\n\
         Subject: Request {i} about the printer\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <m{i}@bench.example>\r\n{reply}MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    )
    .into_bytes()
}
