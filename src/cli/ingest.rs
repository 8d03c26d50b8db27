//! `postdesk ingest`: files, mbox files, directories (Maildirs with their Maildir++
//! folders) and standard input through the pipeline, in group-committed batches; a
//! message's line is printed only once its batch is durable.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;

use crate::config::Config;
use crate::core::decide::Policy;
use crate::desk::ingest::{self, prepare, Message, Prepared, Source};
use crate::store::Store;

/// A batch is also cut when the messages read for it reach this many bytes.
const BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Maildir++ folders that hold no customer mail.
const SKIPPED_FOLDERS: &[&str] = &["trash", "junk", "spam", "drafts", "sent", "deleted messages", "sent messages"];

enum Input {
    File(PathBuf),
    Stdin,
}

pub fn run(config: &Config, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let inputs = collect(paths)?;
    // An MTA's pipe delivers into the helpdesk's database, never a new one beside it: a
    // missing database is a failure the MTA retries (75), not a second helpdesk.
    let mut store = if inputs.iter().any(|i| matches!(i, Input::Stdin)) {
        super::open_store(config)?
    } else {
        super::create_store(config)?
    };
    if inputs.is_empty() {
        eprintln!("postdesk: no new messages in {}", shown(paths));
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = Lines::default();
    let mut pending: Vec<Message> = Vec::new();
    let mut pending_bytes = 0;
    for input in inputs {
        for message in read(&input, &config.policy)? {
            pending_bytes += message.raw.len();
            pending.push(message);
            if pending.len() >= config.batch_size || pending_bytes >= BATCH_BYTES {
                commit_batch(&mut store, config, &mut pending, &mut out)?;
                pending_bytes = 0;
            }
        }
    }
    commit_batch(&mut store, config, &mut pending, &mut out)?;
    out.finish();
    Ok(ExitCode::SUCCESS)
}

fn shown(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// Standard output, which a reader may close early (`postdesk ingest DIR | head -1`):
/// ingesting goes on to the end, so that no message is left half-way, and the lines
/// that could not be printed are counted on standard error.
#[derive(Default)]
struct Lines {
    unprinted: Option<usize>,
}

impl Lines {
    fn print(&mut self, lines: &[String]) -> anyhow::Result<()> {
        if let Some(n) = &mut self.unprinted {
            *n += lines.len();
            return Ok(());
        }
        let mut stdout = std::io::stdout().lock();
        for (i, line) in lines.iter().enumerate() {
            match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    self.unprinted = Some(lines.len() - i);
                    return Ok(());
                }
                Err(e) => return Err(e).context("cannot write to standard output"),
            }
        }
        Ok(())
    }

    fn finish(self) {
        if let Some(n) = self.unprinted {
            eprintln!("postdesk: standard output was closed; {n} more message(s) were ingested without a line");
        }
    }
}

fn commit_batch(store: &mut Store, config: &Config, pending: &mut Vec<Message>, out: &mut Lines) -> anyhow::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let reports = ingest::ingest_batch(store, config, pending, Utc::now())
        .with_context(|| format!("none of the {} messages of this batch was stored", pending.len()))?;
    let lines: Vec<String> =
        pending.iter().zip(reports).map(|(m, report)| format!("{}: {}", m.source.label, report.outcome)).collect();
    pending.clear();
    out.print(&lines)
}

/// The messages of one input: one, or each of an mbox file's.
fn read(input: &Input, policy: &Policy) -> anyhow::Result<Vec<Message>> {
    let limit = policy.max_message_bytes;
    let (raw, total, label) = match input {
        Input::Stdin => {
            let (raw, total) = read_bounded(std::io::stdin().lock(), limit).context("cannot read standard input")?;
            (raw, total, "stdin".to_owned())
        }
        Input::File(path) => {
            let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
            let (raw, total) = read_bounded(file, limit).with_context(|| format!("cannot read {}", path.display()))?;
            (raw, total, path.display().to_string())
        }
    };
    if total > limit as u64 {
        let reason = ingest::oversized(total, limit, &format!("its first {limit} bytes are kept"));
        return Ok(vec![Message { source: Source::file(label, &raw), raw, prepared: Prepared::rejected(reason) }]);
    }
    let messages = match input {
        // An MTA pipes one message, perhaps behind a `From ` envelope line.
        Input::File(_) if mbox::is_mbox(&raw) => mbox::split(&raw),
        _ => vec![raw],
    };
    let several = messages.len() > 1;
    Ok(messages
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let label = if several { format!("{label}#{}", i + 1) } else { label.clone() };
            Message { source: Source::file(label, &raw), prepared: prepare(&raw, policy), raw }
        })
        .collect())
}

/// At most `limit` bytes are kept; the rest is read and counted but not held, so a
/// 1 GB message costs no more memory than one at the limit. Returns the bytes kept and
/// the total.
fn read_bounded(mut reader: impl Read, limit: usize) -> std::io::Result<(Vec<u8>, u64)> {
    let mut raw = Vec::new();
    let kept = (&mut reader).take(limit as u64).read_to_end(&mut raw)? as u64;
    let rest = std::io::copy(&mut reader, &mut std::io::sink())?;
    Ok((raw, kept + rest))
}

/// Expands the arguments before anything is ingested, so a typo fails fast.
fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<Input>> {
    let mut inputs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            inputs.push(Input::Stdin);
            continue;
        }
        let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            let mut files = Vec::new();
            walk(path, &mut files)?;
            files.sort();
            inputs.extend(files.into_iter().map(Input::File));
        } else {
            inputs.push(Input::File(path.clone()));
        }
    }
    Ok(inputs)
}

fn is_maildir(dir: &Path) -> bool {
    dir.join("cur").is_dir() && dir.join("new").is_dir()
}

/// Every message file below `dir`. In a Maildir, the messages are the files of `cur/`
/// and `new/` (never `tmp/`, where they are still being written), plus those of its
/// Maildir++ folders (`.Folder`), except trash, junk, drafts and sent mail; the
/// server's index files are not messages. Elsewhere, every file not hidden.
fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if is_maildir(dir) {
        return walk_maildir(dir, files);
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

fn walk_maildir(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for sub in ["cur", "new"] {
        let sub = dir.join(sub);
        for entry in std::fs::read_dir(&sub).with_context(|| format!("cannot read {}", sub.display()))? {
            let entry = entry.with_context(|| format!("cannot read {}", sub.display()))?;
            if entry.file_type()?.is_file() && !entry.file_name().to_string_lossy().starts_with('.') {
                files.push(entry.path());
            }
        }
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(folder) = name.strip_prefix('.').filter(|f| !f.is_empty() && *f != ".") else {
            continue;
        };
        let path = entry.path();
        if !is_maildir(&path) {
            continue;
        }
        let last = folder.rsplit('.').next().unwrap_or(folder).to_lowercase();
        if SKIPPED_FOLDERS.contains(&last.as_str()) {
            eprintln!("postdesk: skipping {}: a {last} folder holds no customer mail", path.display());
            continue;
        }
        walk_maildir(&path, files)?;
    }
    Ok(())
}

/// mbox files (mboxo and mboxrd): messages separated by `From ` lines.
mod mbox {
    /// A file that starts with a `From ` envelope line.
    pub fn is_mbox(raw: &[u8]) -> bool {
        raw.starts_with(b"From ")
    }

    /// The messages, each without its `From ` line, `>From ` lines unescaped (mboxrd:
    /// one `>` less; this also undoes mboxo's escaping). A new message starts at a
    /// `From ` line at the start of the file or after an empty line.
    pub fn split(raw: &[u8]) -> Vec<Vec<u8>> {
        let mut messages: Vec<Vec<u8>> = Vec::new();
        let mut previous_blank = true;
        for line in raw.split_inclusive(|&b| b == b'\n') {
            let content = line.strip_suffix(b"\n").unwrap_or(line);
            let content = content.strip_suffix(b"\r").unwrap_or(content);
            if previous_blank && line.starts_with(b"From ") {
                messages.push(Vec::new());
            } else if let Some(current) = messages.last_mut() {
                current.extend_from_slice(unescape(line));
            }
            previous_blank = content.is_empty();
        }
        for m in &mut messages {
            // The empty line before the next `From ` belongs to the separator.
            if m.ends_with(b"\r\n\r\n") {
                m.truncate(m.len() - 2);
            } else if m.ends_with(b"\n\n") {
                m.truncate(m.len() - 1);
            }
        }
        messages.retain(|m| !m.iter().all(u8::is_ascii_whitespace));
        messages
    }

    fn unescape(line: &[u8]) -> &[u8] {
        let quoted = line.iter().take_while(|&&b| b == b'>').count();
        if quoted > 0 && line[quoted..].starts_with(b"From ") {
            &line[1..]
        } else {
            line
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn splits_on_from_lines_after_an_empty_line_and_unescapes() {
            let raw = b"From a@x Mon Nov 23 10:00:00 2026\nSubject: one\n\nhello\n>From here\n>>From there\n\n\
                        From b@y Mon Nov 23 11:00:00 2026\nSubject: two\n\nA line, then\nFrom inside a paragraph stays\n";
            let messages = split(raw);
            assert_eq!(messages.len(), 2);
            assert_eq!(messages[0], b"Subject: one\n\nhello\nFrom here\n>From there\n");
            assert_eq!(messages[1], b"Subject: two\n\nA line, then\nFrom inside a paragraph stays\n");
        }

        #[test]
        fn crlf_and_a_single_message() {
            let messages = split(b"From a@x Mon Nov 23 10:00:00 2026\r\nSubject: one\r\n\r\nbody\r\n");
            assert_eq!(messages, [b"Subject: one\r\n\r\nbody\r\n".to_vec()]);
            assert!(is_mbox(b"From a@x\n") && !is_mbox(b"From: a@x\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_stops_keeping_bytes_at_the_limit() {
        let (kept, total) = read_bounded(&b"0123456789"[..], 4).unwrap();
        assert_eq!((kept.as_slice(), total), (&b"0123"[..], 10));
        let (kept, total) = read_bounded(&b"0123"[..], 4).unwrap();
        assert_eq!((kept.len(), total), (4, 4));
    }
}
