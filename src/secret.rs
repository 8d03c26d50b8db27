//! Secrets (passwords): read from a file or a systemd credential, never printed. Debug
//! and Display are redacted, so a secret cannot reach a log line by accident.
//!
//! A password is read only where it is used (logging in), never when the configuration
//! is loaded: commands that only read tickets need no access to it.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The first line of a file, as written by `systemd-creds` or an editor.
    pub fn from_file(path: &Path) -> Result<Secret, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let value = text.lines().next().unwrap_or("").to_owned();
        if value.is_empty() {
            return Err(format!("{} is empty", path.display()));
        }
        Ok(Secret(value))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What a login sends: a password, or an OAuth2 access token with its SASL mechanism.
#[derive(Debug, Clone)]
pub enum Credential {
    Password(Secret),
    Token(crate::core::oauth::Mechanism, Secret),
}

/// Where a password comes from; read on each use, so a rotated file is picked up.
#[derive(Debug, Clone, PartialEq)]
pub enum PasswordSource {
    /// Written in the configuration file (for tests).
    Inline(Secret),
    File(PathBuf),
    /// A systemd credential: a file of this name in the credentials directory
    /// (`$CREDENTIALS_DIRECTORY` under systemd, or `--credentials-dir`).
    Credential {
        name: String,
        dir: Option<PathBuf>,
    },
}

impl PasswordSource {
    pub fn read(&self) -> Result<Secret, String> {
        match self {
            PasswordSource::Inline(secret) => Ok(secret.clone()),
            PasswordSource::File(path) => Secret::from_file(path),
            PasswordSource::Credential { name, dir: Some(dir) } => {
                Secret::from_file(&dir.join(name)).map_err(|e| format!("credential {name:?}: {e}"))
            }
            PasswordSource::Credential { name, dir: None } => Err(format!(
                "credential {name:?}: no credentials directory (under systemd, LoadCredential= provides it; \
                 from a shell, pass --credentials-dir DIR)"
            )),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "<redacted> Secret(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_credential_is_read_from_its_directory_when_used() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("imap"), "pw\n").unwrap();
        let found = PasswordSource::Credential { name: "imap".into(), dir: Some(dir.path().to_owned()) };
        assert_eq!(found.read().unwrap().expose(), "pw");
        let nowhere = PasswordSource::Credential { name: "imap".into(), dir: None };
        assert!(nowhere.read().unwrap_err().contains("--credentials-dir"));
        let missing = PasswordSource::Credential { name: "smtp".into(), dir: Some(dir.path().to_owned()) };
        assert!(missing.read().unwrap_err().starts_with("credential \"smtp\": cannot read"));
    }

    #[test]
    fn read_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(Secret::from_file(&path).unwrap().expose(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(Secret::from_file(&path).unwrap_err().contains("is empty"));
    }
}
