//! `[database]`: a SQLite file (`path`, the default) or a PostgreSQL server (`url`).

use std::path::PathBuf;

use serde::Deserialize;

use super::{is_loopback, Context, Field, Problems, RawPassword, Unknown};
use crate::secret::PasswordSource;

/// Beside the config file.
const DEFAULT_PATH: &str = "postdesk.db";

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawDatabase {
    path: Option<Field<PathBuf>>,
    url: Option<Field<String>>,
    #[serde(flatten)]
    password: RawPassword,
    tls: Option<Field<DatabaseTls>>,
    ca_file: Option<Field<PathBuf>>,
    #[serde(flatten)]
    pub(super) unknown: Unknown,
}

/// Where tickets are kept.
#[derive(Debug, Clone, PartialEq)]
pub enum Database {
    /// One file on this machine: the default, nothing to set up.
    Sqlite(PathBuf),
    /// A server several daemons and consoles share.
    Postgres(PostgresConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub struct PostgresConfig {
    /// As given: `postgres://user@host:port/database`, never with a password in it.
    pub url: String,
    pub password: Option<PasswordSource>,
    pub tls: DatabaseTls,
    pub ca_file: Option<PathBuf>,
}

/// How the connection to PostgreSQL is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseTls {
    /// TLS, with the server's certificate checked against the trusted roots (or
    /// `ca_file`) and its host name: what `sslmode=verify-full` is to libpq.
    #[default]
    Verify,
    /// No encryption: only to a loopback address or a Unix socket.
    None,
}

impl Database {
    /// Where it is, for messages: the file, or the URL (which holds no password).
    pub fn shown(&self) -> String {
        match self {
            Database::Sqlite(path) => path.display().to_string(),
            Database::Postgres(pg) => pg.url.clone(),
        }
    }

    /// Whether there may be a database to read (a server is asked; a file is looked for).
    pub fn may_exist(&self) -> bool {
        match self {
            Database::Sqlite(path) => path.exists(),
            Database::Postgres(_) => true,
        }
    }
}

pub(super) fn database(p: &mut Problems, raw: RawDatabase, cx: &Context) -> Database {
    let path = p.get("database.path", raw.path);
    let Some(url) = p.get("database.url", raw.url) else {
        for (key, given) in
            [("tls", raw.tls.is_some()), ("ca_file", raw.ca_file.is_some()), ("password", raw.password.is_given())]
        {
            if given {
                p.add(&format!("database.{key}"), "is for PostgreSQL: set database.url too");
            }
        }
        // Relative to the config file, like every other path in it: a command run from
        // another directory (an MTA's pipe) must reach the same database.
        let path = cx.base.join(path.unwrap_or_else(|| PathBuf::from(DEFAULT_PATH)));
        if path.as_os_str().is_empty() {
            p.add("database.path", "must not be empty");
        }
        return Database::Sqlite(path);
    };
    if path.is_some() {
        p.add("database", "give either path (SQLite) or url (PostgreSQL), not both");
    }
    let tls = p.get("database.tls", raw.tls).unwrap_or_default();
    check_url(p, &url, tls);
    let password = raw.password.is_given().then(|| p.password("database.password", raw.password, cx)).flatten();
    let ca_file = p.ca_file("database.ca_file", raw.ca_file, &cx.base);
    Database::Postgres(PostgresConfig { url, password, tls, ca_file })
}

/// A PostgreSQL database named on the command line (`migrate-db --to`), checked as
/// `database.url` is, signed in to with the password and TLS settings of `[database]`.
pub fn postgres_target(url: &str, configured: &Database) -> Result<PostgresConfig, String> {
    let mut target = match configured {
        Database::Postgres(pg) => pg.clone(),
        Database::Sqlite(_) => {
            PostgresConfig { url: String::new(), password: None, tls: DatabaseTls::Verify, ca_file: None }
        }
    };
    target.url = url.to_owned();
    let mut p = Problems::default();
    check_url(&mut p, url, target.tls);
    match p.0.is_empty() {
        true => Ok(target),
        false => Err(super::ConfigError::Invalid(p.0).to_string()),
    }
}

fn check_url(p: &mut Problems, url: &str, tls: DatabaseTls) {
    const KEY: &str = "database.url";
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        p.add(KEY, "must be a postgres:// URL, e.g. \"postgres://postdesk@db.example:5432/postdesk\"");
        return;
    }
    let parsed: postgres::Config = match url.parse() {
        Ok(c) => c,
        Err(e) => return p.add(KEY, format!("is not a PostgreSQL URL: {e}")),
    };
    if parsed.get_password().is_some() {
        p.add(KEY, "holds a password: put it in database.password_file or database.password_credential instead");
    }
    if parsed.get_user().is_none() {
        p.add(KEY, "names no user: e.g. \"postgres://postdesk@host/postdesk\"");
    }
    if parsed.get_hosts().is_empty() {
        p.add(KEY, "names no host");
    }
    // `hostaddr` is where the connection goes when given, whatever `host` says.
    let local = parsed.get_hosts().iter().all(|h| match h {
        postgres::config::Host::Tcp(name) => is_loopback(name),
        postgres::config::Host::Unix(_) => true,
    }) && parsed.get_hostaddrs().iter().all(|ip| ip.is_loopback());
    if tls == DatabaseTls::None && !local {
        let why = "sends the password and every ticket in clear text; it is allowed only to a loopback address";
        p.add("database.tls", format!("\"none\" {why} or a Unix socket"));
    }
}
