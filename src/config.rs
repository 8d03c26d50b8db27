//! Configuration: a raw serde mirror of the TOML file (plus `POSTDESK_…` environment
//! overrides), then one validation step that reports every problem with its dotted key
//! and builds the typed `Config`. Loading reads files; validation itself is pure.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::ack::{AckPolicy, AckTemplate};
use crate::core::address;
use crate::core::decide::Policy;
use crate::core::resolve::{AddressSource, ResolvePolicy};
use crate::core::trust::FollowUpFrom;
use crate::secret::Secret;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_FILE: &str = "postdesk.toml";
const DEFAULT_TEMPLATE: &str = include_str!("../config/acknowledgement.txt.j2");

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Raw {
    helpdesk: RawHelpdesk,
    database: RawDatabase,
    ingest: RawIngest,
    customers: RawCustomers,
    tickets: RawTickets,
    acknowledgement: RawAcknowledgement,
    mailbox: Vec<RawMailbox>,
    smtp: Option<RawSmtp>,
    metrics: RawMetrics,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: Option<u16>,
    #[serde(default = "default_tls")]
    tls: TlsMode,
    ca_file: Option<PathBuf>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    password_credential: Option<String>,
    #[serde(default = "default_give_up")]
    give_up_after_hours: u64,
}

fn default_give_up() -> u64 {
    48
}

/// The SMTP server acknowledgements are delivered through.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    /// Username and password for AUTH, when the server wants it.
    pub credentials: Option<(String, Secret)>,
    /// Transient failures are retried this long after the acknowledgement was queued.
    pub give_up_after: chrono::Duration,
}

/// How a connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    Implicit,
    /// Plain connection upgraded with STARTTLS; refused if the server does not offer it.
    Starttls,
    /// No encryption: only to a loopback address.
    None,
}

/// What happens to a message on the server once its ticket is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum After {
    Seen,
    Move,
    Delete,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMailbox {
    name: String,
    address: String,
    host: String,
    port: Option<u16>,
    #[serde(default = "default_tls")]
    tls: TlsMode,
    ca_file: Option<PathBuf>,
    username: String,
    password: Option<String>,
    password_file: Option<PathBuf>,
    password_credential: Option<String>,
    #[serde(default = "default_folder")]
    folder: String,
    #[serde(default = "default_after")]
    after: After,
    #[serde(default = "default_processed")]
    processed_folder: String,
    #[serde(default = "default_failed")]
    failed_folder: String,
    #[serde(default = "default_true")]
    idle: bool,
    #[serde(default = "default_poll")]
    poll_interval_secs: u64,
    authserv_id: Option<String>,
}

fn default_tls() -> TlsMode {
    TlsMode::Implicit
}
fn default_folder() -> String {
    "INBOX".to_owned()
}
fn default_after() -> After {
    After::Move
}
fn default_processed() -> String {
    "Processed".to_owned()
}
fn default_failed() -> String {
    "Failed".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_poll() -> u64 {
    60
}

/// One watched IMAP mailbox.
#[derive(Debug, Clone)]
pub struct MailboxConfig {
    pub name: String,
    /// The helpdesk address this mailbox receives (normalised).
    pub address: String,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    pub username: String,
    pub password: Secret,
    pub folder: String,
    pub after: After,
    pub processed_folder: String,
    pub failed_folder: String,
    pub idle: bool,
    pub poll_interval: std::time::Duration,
    /// The authserv-id of the `Authentication-Results` header this mailbox's server
    /// writes; its DMARC verdict is trusted.
    pub authserv_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHelpdesk {
    name: String,
    address: String,
    own_addresses: Vec<String>,
    internal_domains: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDatabase {
    path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIngest {
    max_message_bytes: u64,
    /// Deprecated home of `customers.customer_address`.
    customer_address: Option<AddressSource>,
    reopen_closed: bool,
    batch_size: usize,
    authserv_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCustomers {
    customer_address: Option<AddressSource>,
    auto_create: bool,
    auto_create_organisations: bool,
    free_mail_domains: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTickets {
    tag_prefix: String,
    loop_header: String,
    follow_up_from: FollowUpFrom,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAcknowledgement {
    enabled: bool,
    template: Option<PathBuf>,
    from_name: Option<String>,
    max_per_sender_per_day: u32,
    max_per_domain_per_day: u32,
    show_organisation: bool,
}

impl Default for RawHelpdesk {
    fn default() -> Self {
        RawHelpdesk {
            name: "Helpdesk".to_owned(),
            address: "support@helpdesk.example".to_owned(),
            own_addresses: Vec::new(),
            internal_domains: None,
        }
    }
}

impl Default for RawDatabase {
    fn default() -> Self {
        RawDatabase { path: PathBuf::from("postdesk.db") }
    }
}

impl Default for RawIngest {
    fn default() -> Self {
        RawIngest {
            max_message_bytes: 25 * 1024 * 1024,
            customer_address: None,
            reopen_closed: true,
            batch_size: 200,
            authserv_id: None,
        }
    }
}

impl Default for RawCustomers {
    fn default() -> Self {
        RawCustomers {
            customer_address: None,
            auto_create: true,
            auto_create_organisations: true,
            free_mail_domains: Vec::new(),
        }
    }
}

impl Default for RawTickets {
    fn default() -> Self {
        RawTickets {
            tag_prefix: "Ticket#".to_owned(),
            loop_header: "X-Postdesk-Loop".to_owned(),
            follow_up_from: FollowUpFrom::Organisation,
        }
    }
}

impl Default for RawAcknowledgement {
    fn default() -> Self {
        RawAcknowledgement {
            enabled: true,
            template: None,
            from_name: None,
            max_per_sender_per_day: 10,
            max_per_domain_per_day: 50,
            show_organisation: false,
        }
    }
}

#[derive(Debug)]
pub struct Config {
    /// The file this was read from, if any.
    pub file: Option<PathBuf>,
    pub database_path: PathBuf,
    pub helpdesk_address: String,
    /// Messages committed together with one fsync (group commit).
    pub batch_size: usize,
    /// The authserv-id whose `Authentication-Results` are trusted for mail from files and
    /// standard input (an MTA's pipe); `[[mailbox]] authserv_id` for IMAP.
    pub ingest_authserv_id: Option<String>,
    pub policy: Policy,
    pub mailboxes: Vec<MailboxConfig>,
    /// Without it, acknowledgements wait in the outbox.
    pub smtp: Option<SmtpConfig>,
    /// Where the Prometheus endpoint listens, if anywhere (loopback only).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// One problem with one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read or is not valid TOML of the right shape.
    Load(String),
    Invalid(Vec<Problem>),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Load(message) => write!(f, "{message}"),
            ConfigError::Invalid(problems) => {
                let lines: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.key, p.message)).collect();
                write!(f, "{}", lines.join("; "))
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Loads `path`, or `postdesk.toml` in the working directory when it exists, else the
/// built-in defaults; `POSTDESK_SECTION__KEY` environment variables override either.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let file = match path {
        Some(p) => Some(p.to_path_buf()),
        None => Path::new(DEFAULT_FILE).exists().then(|| PathBuf::from(DEFAULT_FILE)),
    };
    let mut builder = config::Config::builder();
    if let Some(file) = &file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| ConfigError::Load(format!("cannot read config file {}: {e}", file.display())))?;
        builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
    }
    let env = config::Environment::with_prefix("POSTDESK").prefix_separator("_").separator("__").try_parsing(true);
    let raw: Raw = builder
        .add_source(env)
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError::Load(describe_load_error(file.as_deref(), &e)))?;
    let base = file.as_deref().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    validate(raw, file, &base)
}

fn describe_load_error(file: Option<&Path>, e: &config::ConfigError) -> String {
    match file {
        Some(f) => format!("{}: {e}", f.display()),
        None => e.to_string(),
    }
}

/// Collects problems instead of stopping at the first, so one run shows them all.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(Problem { key: key.to_owned(), message: message.into() });
    }

    fn address(&mut self, key: &str, value: &str) -> String {
        address::normalise(value).unwrap_or_else(|| {
            self.add(key, format!("{value:?} is not an email address"));
            String::new()
        })
    }

    /// A host name, and plain text only to a loopback address.
    fn endpoint(&mut self, key: &dyn Fn(&str) -> String, host: &str, tls: TlsMode) {
        if host.trim().is_empty() {
            self.add(&key("host"), "must not be empty");
        }
        if tls == TlsMode::None && !is_loopback(host) {
            let why = "sends the password and mail in clear text; it is allowed only to a loopback address";
            self.add(&key("tls"), format!("\"none\" {why}, not {host:?}"));
        }
    }

    fn ca_file(&mut self, key: &str, file: Option<&Path>, base: &Path) -> Option<PathBuf> {
        let path = base.join(file?);
        if !path.is_file() {
            self.add(key, format!("{} does not exist", path.display()));
        }
        Some(path)
    }

    /// An RFC 8601 authserv-id: one token, as the receiving server writes it.
    fn authserv_id(&mut self, key: &str, value: Option<&str>) -> Option<String> {
        let id = value?.trim();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic() && !b";()".contains(&b)) {
            self.add(key, "must be the authserv-id the receiving server writes, e.g. \"mx.helpdesk.example\"");
        }
        Some(id.to_owned())
    }

    fn domain(&mut self, key: &str, value: &str) -> String {
        address::normalise_domain(value).unwrap_or_else(|| {
            self.add(key, format!("{value:?} is not a domain name"));
            String::new()
        })
    }
}

fn validate(raw: Raw, file: Option<PathBuf>, base: &Path) -> Result<Config, ConfigError> {
    let mut p = Problems::default();
    let helpdesk_address = p.address("helpdesk.address", &raw.helpdesk.address);
    let mut own_addresses = vec![helpdesk_address.clone()];
    for a in &raw.helpdesk.own_addresses {
        own_addresses.push(p.address("helpdesk.own_addresses", a));
    }
    let internal_domains = match &raw.helpdesk.internal_domains {
        Some(domains) => domains.iter().map(|d| p.domain("helpdesk.internal_domains", d)).collect(),
        None => vec![address::domain_of(&helpdesk_address).to_owned()],
    };
    let extra_free_mail =
        raw.customers.free_mail_domains.iter().map(|d| p.domain("customers.free_mail_domains", d)).collect();
    if raw.database.path.as_os_str().is_empty() {
        p.add("database.path", "must not be empty");
    }
    if !(1024..=1 << 30).contains(&raw.ingest.max_message_bytes) {
        p.add("ingest.max_message_bytes", "must be between 1024 and 1073741824");
    }
    if !(1..=10_000).contains(&raw.ingest.batch_size) {
        p.add("ingest.batch_size", "must be between 1 and 10000");
    }
    let tag = &raw.tickets.tag_prefix;
    if tag.is_empty() || tag.chars().any(|c| c.is_whitespace() || c.is_control() || "[]".contains(c)) {
        p.add("tickets.tag_prefix", "must be non-empty, without spaces or brackets");
    } else if tag.ends_with(|c: char| c.is_ascii_digit()) {
        p.add("tickets.tag_prefix", "must not end with a digit");
    }
    let header = &raw.tickets.loop_header;
    if header.is_empty() || !header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        p.add("tickets.loop_header", "must be a header name of letters, digits and '-'");
    }
    let customer_address = match (raw.customers.customer_address, raw.ingest.customer_address) {
        (Some(a), Some(b)) if a != b => {
            p.add("ingest.customer_address", "conflicts with customers.customer_address (its new home); remove it");
            a
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => AddressSource::From,
    };
    if raw.acknowledgement.max_per_domain_per_day < raw.acknowledgement.max_per_sender_per_day {
        p.add("acknowledgement.max_per_domain_per_day", "must be at least acknowledgement.max_per_sender_per_day");
    }
    let ingest_authserv_id = p.authserv_id("ingest.authserv_id", raw.ingest.authserv_id.as_deref());
    let mailboxes: Vec<MailboxConfig> =
        raw.mailbox.iter().enumerate().filter_map(|(i, m)| mailbox(&mut p, i, m, base)).collect();
    for (i, m) in mailboxes.iter().enumerate() {
        if mailboxes[..i].iter().any(|other| other.name == m.name) {
            p.add(&format!("mailbox[{i}].name"), format!("{:?} is used by another mailbox", m.name));
        }
        if !own_addresses.contains(&m.address) {
            own_addresses.push(m.address.clone());
        }
    }
    let smtp = raw.smtp.as_ref().and_then(|s| smtp(&mut p, s, base));
    let metrics_listen = raw.metrics.listen.as_deref().and_then(|text| match text.parse::<std::net::SocketAddr>() {
        Ok(addr) if addr.ip().is_loopback() => Some(addr),
        Ok(_) => {
            p.add(
                "metrics.listen",
                format!("{text} is not a loopback address; the metrics endpoint has no authentication"),
            );
            None
        }
        Err(_) => {
            p.add("metrics.listen", format!("{text:?} is not an address:port such as 127.0.0.1:9187"));
            None
        }
    });
    let template = load_template(&raw.acknowledgement, base).unwrap_or_else(|e| {
        p.add("acknowledgement.template", e);
        AckTemplate::new(String::new()).expect("an empty template compiles")
    });
    if !p.0.is_empty() {
        return Err(ConfigError::Invalid(p.0));
    }
    let name = raw.helpdesk.name;
    Ok(Config {
        file,
        database_path: raw.database.path,
        helpdesk_address,
        batch_size: raw.ingest.batch_size,
        ingest_authserv_id,
        policy: Policy {
            resolve: ResolvePolicy {
                prefer: customer_address,
                auto_create_customers: raw.customers.auto_create,
                auto_create_organisations: raw.customers.auto_create_organisations,
                extra_free_mail,
                internal_domains,
            },
            ack: AckPolicy {
                enabled: raw.acknowledgement.enabled,
                from_name: raw.acknowledgement.from_name.unwrap_or_else(|| name.clone()),
                helpdesk_name: name,
                max_per_sender_per_day: raw.acknowledgement.max_per_sender_per_day,
                max_per_domain_per_day: raw.acknowledgement.max_per_domain_per_day,
                show_organisation: raw.acknowledgement.show_organisation,
                template,
            },
            own_addresses,
            tag_prefix: raw.tickets.tag_prefix,
            loop_header: raw.tickets.loop_header,
            reopen_closed: raw.ingest.reopen_closed,
            follow_up_from: raw.tickets.follow_up_from,
            max_message_bytes: raw.ingest.max_message_bytes as usize,
        },
        mailboxes,
        smtp,
        metrics_listen,
    })
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn mailbox(p: &mut Problems, i: usize, raw: &RawMailbox, base: &Path) -> Option<MailboxConfig> {
    let key = |field: &str| format!("mailbox[{i}].{field}");
    let before = p.0.len();
    if raw.name.trim().is_empty() {
        p.add(&key("name"), "must not be empty");
    }
    let address = p.address(&key("address"), &raw.address);
    p.endpoint(&key, &raw.host, raw.tls);
    if raw.poll_interval_secs == 0 {
        p.add(&key("poll_interval_secs"), "must be at least 1");
    }
    for (field, folder) in
        [("folder", &raw.folder), ("processed_folder", &raw.processed_folder), ("failed_folder", &raw.failed_folder)]
    {
        if folder.trim().is_empty() {
            p.add(&key(field), "must not be empty");
        }
    }
    let ca_file = p.ca_file(&key("ca_file"), raw.ca_file.as_deref(), base);
    let password = password(&raw.password, &raw.password_file, &raw.password_credential)
        .map_err(|e| p.add(&key("password"), e))
        .ok();
    let authserv_id = p.authserv_id(&key("authserv_id"), raw.authserv_id.as_deref());
    let port = raw.port.unwrap_or(if raw.tls == TlsMode::Implicit { 993 } else { 143 });
    (p.0.len() == before).then(|| MailboxConfig {
        name: raw.name.clone(),
        address,
        host: raw.host.clone(),
        port,
        tls: raw.tls,
        ca_file,
        username: raw.username.clone(),
        password: password.expect("no problems means a password"),
        folder: raw.folder.clone(),
        after: raw.after,
        processed_folder: raw.processed_folder.clone(),
        failed_folder: raw.failed_folder.clone(),
        idle: raw.idle,
        poll_interval: std::time::Duration::from_secs(raw.poll_interval_secs),
        authserv_id,
    })
}

fn smtp(p: &mut Problems, raw: &RawSmtp, base: &Path) -> Option<SmtpConfig> {
    let key = |field: &str| format!("smtp.{field}");
    let before = p.0.len();
    p.endpoint(&key, &raw.host, raw.tls);
    let ca_file = p.ca_file(&key("ca_file"), raw.ca_file.as_deref(), base);
    let credentials = match &raw.username {
        Some(user) => password(&raw.password, &raw.password_file, &raw.password_credential)
            .map(|pw| Some((user.clone(), pw)))
            .map_err(|e| p.add(&key("password"), e))
            .ok()
            .flatten(),
        None if raw.password.is_some() || raw.password_file.is_some() || raw.password_credential.is_some() => {
            p.add(&key("username"), "a password is configured but no username");
            None
        }
        None => None,
    };
    if raw.give_up_after_hours == 0 {
        p.add(&key("give_up_after_hours"), "must be at least 1");
    }
    let port = raw.port.unwrap_or(match raw.tls {
        TlsMode::Implicit => 465,
        TlsMode::Starttls => 587,
        TlsMode::None => 25,
    });
    (p.0.len() == before).then(|| SmtpConfig {
        host: raw.host.clone(),
        port,
        tls: raw.tls,
        ca_file,
        credentials,
        give_up_after: chrono::Duration::hours(raw.give_up_after_hours as i64),
    })
}

/// Exactly one of `password`, `password_file` or `password_credential` (a systemd
/// credential, read from `$CREDENTIALS_DIRECTORY`).
fn password(inline: &Option<String>, file: &Option<PathBuf>, credential: &Option<String>) -> Result<Secret, String> {
    match (inline, file, credential) {
        (Some(p), None, None) => Ok(Secret::new(p.clone())),
        (None, Some(file), None) => Secret::from_file(file),
        (None, None, Some(name)) => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                format!(
                    "credential {name:?}: CREDENTIALS_DIRECTORY is not set (run under systemd with LoadCredential=)"
                )
            })?;
            Secret::from_file(&Path::new(&dir).join(name))
        }
        (None, None, None) => Err("one of password, password_file or password_credential is required".to_owned()),
        _ => Err("give only one of password, password_file or password_credential".to_owned()),
    }
}

fn load_template(raw: &RawAcknowledgement, base: &Path) -> Result<AckTemplate, String> {
    let source = match &raw.template {
        None => DEFAULT_TEMPLATE.to_owned(),
        Some(path) => {
            let path = base.join(path);
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
        }
    };
    AckTemplate::new(source).map_err(|e| format!("template does not compile: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: Raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        validate(raw, None, Path::new(""))
    }

    #[test]
    fn defaults_are_valid() {
        let c = from_toml("").unwrap();
        assert_eq!(c.database_path, PathBuf::from("postdesk.db"));
        assert_eq!(c.helpdesk_address, "support@helpdesk.example");
        assert_eq!(c.policy.resolve.internal_domains, vec!["helpdesk.example"]);
        assert_eq!(c.policy.ack.max_per_sender_per_day, 10);
        assert_eq!(c.policy.ack.max_per_domain_per_day, 50);
        assert!(!c.policy.ack.show_organisation);
        assert_eq!(c.policy.follow_up_from, FollowUpFrom::Organisation);
        assert_eq!(c.policy.resolve.prefer, AddressSource::From);
    }

    #[test]
    fn trust_settings() {
        let c = from_toml(
            "[tickets]\nfollow_up_from = 'participants'\n[customers]\ncustomer_address = 'reply-to'\n\
             [acknowledgement]\nmax_per_domain_per_day = 20\nshow_organisation = true\n",
        )
        .unwrap();
        assert_eq!(c.policy.follow_up_from, FollowUpFrom::Participants);
        assert_eq!(c.policy.resolve.prefer, AddressSource::ReplyTo);
        assert_eq!((c.policy.ack.max_per_domain_per_day, c.policy.ack.show_organisation), (20, true));
        // The old home of customer_address still works.
        let c = from_toml("[ingest]\ncustomer_address = 'reply-to'\n").unwrap();
        assert_eq!(c.policy.resolve.prefer, AddressSource::ReplyTo);

        let err = from_toml("[tickets]\nfollow_up_from = 'everybody'\n").unwrap_err().to_string();
        assert!(err.contains("follow_up_from") && err.contains("everybody"), "{err}");
        let err = from_toml(
            "[customers]\ncustomer_address = 'from'\n[ingest]\ncustomer_address = 'reply-to'\n\
             [acknowledgement]\nmax_per_domain_per_day = 5\n",
        )
        .unwrap_err();
        let ConfigError::Invalid(problems) = err else { panic!("{err}") };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["ingest.customer_address", "acknowledgement.max_per_domain_per_day"]);

        let c = from_toml(&format!("{MAILBOX}password = 'pw'\nauthserv_id = 'mx.helpdesk.example'\n")).unwrap();
        assert_eq!(c.mailboxes[0].authserv_id.as_deref(), Some("mx.helpdesk.example"));
        let err = from_toml(&format!("{MAILBOX}password = 'pw'\nauthserv_id = 'mx; dmarc=pass'\n")).unwrap_err();
        assert!(err.to_string().contains("mailbox[0].authserv_id"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = from_toml("[database]\npath = 'x.db'\npaht = 'y'\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `paht`"), "{err}");
        let err = from_toml("[databse]\npath = 'x.db'\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `databse`"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let err = from_toml(
            "[helpdesk]\naddress = 'nope'\ninternal_domains = ['bad domain']\n\
             [ingest]\nbatch_size = 0\n[tickets]\ntag_prefix = 'T1'\nloop_header = 'X Loop'\n\
             [acknowledgement]\ntemplate = '/nonexistent/ack.j2'\n",
        )
        .unwrap_err();
        let ConfigError::Invalid(problems) = err else { panic!("expected validation problems: {err}") };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "helpdesk.address",
                "helpdesk.internal_domains",
                "ingest.batch_size",
                "tickets.tag_prefix",
                "tickets.loop_header",
                "acknowledgement.template"
            ]
        );
    }

    const MAILBOX: &str = "[[mailbox]]\nname = 'support'\naddress = 'support@helpdesk.example'\nhost = 'imap.helpdesk.example'\nusername = 'support'\n";

    #[test]
    fn a_mailbox_gets_defaults_and_is_one_of_our_addresses() {
        let c = from_toml(&format!("{MAILBOX}password = 'pw'\n")).unwrap();
        let m = &c.mailboxes[0];
        assert_eq!((m.port, m.tls, m.after, m.folder.as_str()), (993, TlsMode::Implicit, After::Move, "INBOX"));
        assert_eq!(format!("{:?}", m.password), "Secret(<redacted>)");
        assert!(c.policy.own_addresses.contains(&"support@helpdesk.example".to_owned()));
    }

    #[test]
    fn mailbox_problems_name_the_mailbox() {
        let cases = [
            ("", "mailbox[0].password", "one of password, password_file or password_credential is required"),
            ("password = 'a'\npassword_file = '/x'\n", "mailbox[0].password", "give only one"),
            ("password_file = '/nonexistent/pw'\n", "mailbox[0].password", "cannot read /nonexistent/pw"),
            ("password = 'a'\ntls = 'none'\n", "mailbox[0].tls", "only to a loopback address"),
            ("password = 'a'\nca_file = '/nonexistent/ca.pem'\n", "mailbox[0].ca_file", "does not exist"),
        ];
        for (extra, key, message) in cases {
            let err = from_toml(&format!("{MAILBOX}{extra}")).unwrap_err();
            let ConfigError::Invalid(problems) = err else { panic!("{extra}: {err}") };
            assert!(problems.iter().any(|p| p.key == key && p.message.contains(message)), "{extra}: {problems:?}");
        }
        let plain_loopback = from_toml(
            &format!("{MAILBOX}password = 'a'\ntls = 'none'\n").replace("imap.helpdesk.example", "127.0.0.1"),
        );
        assert_eq!(plain_loopback.unwrap().mailboxes[0].port, 143);
    }

    #[test]
    fn smtp_settings() {
        let c = from_toml("[smtp]\nhost = 'mail.helpdesk.example'\ntls = 'starttls'\n").unwrap();
        let s = c.smtp.unwrap();
        assert_eq!((s.port, s.credentials.is_none(), s.give_up_after.num_hours()), (587, true, 48));
        let err =
            from_toml("[smtp]\nhost = 'mail.example.com'\ntls = 'none'\npassword = 'x'\n").unwrap_err().to_string();
        assert!(err.contains("smtp.tls: ") && err.contains("smtp.username: "), "{err}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let err = from_toml("[ingest]\nbatch_size = 'many'\n").unwrap_err().to_string();
        assert!(err.contains("batch_size"), "{err}");
    }
}
