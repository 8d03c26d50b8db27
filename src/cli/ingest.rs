//! `postdesk ingest`: files, directories and standard input through the pipeline, in
//! group-committed batches; a message's line is printed only once its batch is durable.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use chrono::Utc;

use crate::config::Config;
use crate::ingest::{Batch, Source};
use crate::store::Store;

/// A batch is also cut when the messages read for it reach this many bytes.
const BATCH_BYTES: usize = 64 * 1024 * 1024;

enum Input {
    File(PathBuf),
    Stdin,
}

pub fn run(config: &Config, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let inputs = collect(paths)?;
    let mut store = super::open_store(config)?;
    let mut pending: Vec<(Vec<u8>, Source)> = Vec::new();
    let mut pending_bytes = 0;
    for input in inputs {
        let (raw, label) = read(&input)?;
        pending_bytes += raw.len();
        let source = Source::file(label, &raw);
        pending.push((raw, source));
        if pending.len() >= config.batch_size || pending_bytes >= BATCH_BYTES {
            commit_batch(&mut store, config, &mut pending)?;
            pending_bytes = 0;
        }
    }
    commit_batch(&mut store, config, &mut pending)?;
    Ok(ExitCode::SUCCESS)
}

fn commit_batch(store: &mut Store, config: &Config, pending: &mut Vec<(Vec<u8>, Source)>) -> anyhow::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let mut batch = Batch::begin(store, config)?;
    let mut lines = Vec::with_capacity(pending.len());
    for (raw, source) in pending.iter() {
        let report = batch.ingest_one(raw, source, now).with_context(|| {
            format!("{}: not stored, nor the {} messages of its batch", source.label, pending.len())
        })?;
        lines.push(format!("{}: {}", source.label, report.outcome));
    }
    batch.commit().with_context(|| format!("{} messages not stored", pending.len()))?;
    println!("{}", lines.join("\n"));
    pending.clear();
    Ok(())
}

fn read(input: &Input) -> anyhow::Result<(Vec<u8>, String)> {
    match input {
        Input::Stdin => {
            let mut raw = Vec::new();
            std::io::stdin().read_to_end(&mut raw).context("cannot read standard input")?;
            Ok((raw, "stdin".to_owned()))
        }
        Input::File(path) => {
            let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            Ok((raw, path.display().to_string()))
        }
    }
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
    if inputs.is_empty() {
        bail!("no messages found in {}", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    Ok(inputs)
}

/// Every regular file below `dir`, skipping hidden entries and a Maildir's `tmp/`,
/// where messages are still being written.
fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let is_maildir = dir.join("cur").is_dir() && dir.join("new").is_dir();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') || (is_maildir && name == "tmp") {
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
