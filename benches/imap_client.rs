//! A minimal IMAP client for the IMAP and acknowledgement benchmarks, and their timing
//! helper.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Instant;

/// Logs in on a plain IMAP port; the stream and a reader for the responses.
pub fn imap_login(port: u16, user: &str, password: &str) -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream.try_clone().unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    write!(w, "l LOGIN \"{user}\" \"{password}\"\r\n").unwrap();
    read_until(&mut reader, "l ");
    (stream, reader)
}

/// Reads responses until the tagged one starting with `prefix`, which must be OK.
pub fn read_until(reader: &mut BufReader<TcpStream>, prefix: &str) {
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "connection closed");
        if line.starts_with(prefix) {
            assert!(line.contains("OK"), "{line}");
            return;
        }
    }
}

/// A bare client IDLE-ing on `folder`: the receiver gets the time of every `* EXISTS`.
pub fn idle_watcher(port: u16, user: &str, password: &str, folder: &str) -> mpsc::Receiver<Instant> {
    let (tx, rx) = mpsc::channel();
    let (mut w, mut r) = imap_login(port, user, password);
    write!(w, "s SELECT \"{folder}\"\r\n").unwrap();
    read_until(&mut r, "s ");
    write!(w, "i IDLE\r\n").unwrap();
    std::thread::spawn(move || {
        let _keep_open = w;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line.ends_with("EXISTS\r\n") {
                let _ = tx.send(Instant::now());
            }
        }
    });
    rx
}

/// Median and 99th percentile of samples in milliseconds.
pub fn median_p99(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[(samples.len() * 99 / 100).min(samples.len() - 1)])
}
