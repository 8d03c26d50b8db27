//! Configuration: a raw serde mirror of the TOML file (plus `POSTDESK_…` environment
//! overrides), then one validation step that reports every problem with its dotted key
//! and builds the typed `Config`. Loading reads files; validation itself is pure.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::core::ack::{AckPolicy, AckTemplate};
use crate::core::address;
use crate::core::decide::Policy;
use crate::core::resolve::{AddressSource, ResolvePolicy};
use crate::core::trust::FollowUpFrom;
use crate::secret::{PasswordSource, Secret};

mod database;
mod oauth;
pub use database::{postgres_target, Database, DatabaseTls, PostgresConfig};
pub use oauth::{Login, OAuthProvider};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_FILE: &str = "postdesk.toml";
const DEFAULT_TEMPLATE: &str = include_str!("../config/acknowledgement.txt.j2");

/// A value as the file (or environment) gave it: of the right type, or kept with what
/// was wrong, so one run reports every bad value instead of stopping at the first.
#[derive(Debug)]
enum Field<T> {
    Ok(T),
    Bad(String),
}

/// What a value must be, in the words a problem uses: `"maybe" is not <WHAT>`.
trait Expected {
    const WHAT: &'static str;
}

impl<'de, T: Deserialize<'de> + Expected> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = config::Value::deserialize(d)?;
        Ok(match T::deserialize(value.clone()) {
            Ok(v) => Field::Ok(v),
            Err(_) => {
                let shown = match &value.kind {
                    config::ValueKind::String(s) => format!("{s:?}"),
                    config::ValueKind::Table(_) => "a table".to_owned(),
                    config::ValueKind::Array(_) => "a list".to_owned(),
                    _ => value.to_string(),
                };
                Field::Bad(format!("{shown} is not {}", T::WHAT))
            }
        })
    }
}

impl<T: Default> Default for Field<T> {
    fn default() -> Self {
        Field::Ok(T::default())
    }
}

macro_rules! expected {
    ($($t:ty => $what:literal),* $(,)?) => { $(impl Expected for $t { const WHAT: &'static str = $what; })* };
}
expected! {
    String => "a string",
    PathBuf => "a path",
    bool => "true or false",
    u16 => "a whole number from 0 to 65535",
    u32 => "a whole number from 0 to 4294967295",
    u64 => "a whole number of 0 or more",
    usize => "a whole number of 0 or more",
    Vec<String> => "a list of strings",
    TlsMode => "one of implicit, starttls, none",
    After => "one of seen, move, delete",
    AddressSource => "one of from, reply-to",
    FollowUpFrom => "one of participants, organisation, anyone",
    oauth::AuthKind => "one of password, xoauth2, oauthbearer",
    DatabaseTls => "one of verify, none",
    crate::core::oauth::ProviderKind => "one of microsoft, google, generic",
    crate::core::oauth::Grant => "one of refresh_token, client_credentials",
}

/// Keys of a section that are not ours, reported as unknown.
type Unknown = BTreeMap<String, config::Value>;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Raw {
    helpdesk: RawHelpdesk,
    database: database::RawDatabase,
    ingest: RawIngest,
    customers: RawCustomers,
    tickets: RawTickets,
    acknowledgement: RawAcknowledgement,
    mailbox: Vec<RawMailbox>,
    smtp: Option<RawSmtp>,
    metrics: RawMetrics,
    web: RawWeb,
    portal: RawPortal,
    oauth2: BTreeMap<String, oauth::RawProvider>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawWeb {
    listen: Option<Field<String>>,
    base_url: Option<Field<String>>,
    secure_cookies: Option<Field<bool>>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawPortal {
    public_form: Option<Field<bool>>,
    max_upload_bytes: Option<Field<u64>>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// The customer portal (`[portal]`), served with the console under `[web]`.
#[derive(Debug, Clone)]
pub struct PortalConfig {
    /// `/support` takes requests from anyone (each confirmed by a link mailed to its
    /// sender before a ticket is opened); without it, only signed-in customer users
    /// open tickets in the portal.
    pub public_form: bool,
    /// The most a form may upload, attachments and text together.
    pub max_upload_bytes: usize,
}

/// The agents' web console (`[web]`).
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub listen: std::net::SocketAddr,
    /// Where agents reach the console, for links in mail; without it, `http://{listen}`.
    pub base_url: String,
    /// Session cookies only over HTTPS: set when a TLS proxy is in front.
    pub secure_cookies: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawMetrics {
    listen: Option<Field<String>>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// A password given one of three ways; which one is checked in validation.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawPassword {
    password: Option<Field<String>>,
    password_file: Option<Field<PathBuf>>,
    password_credential: Option<Field<String>>,
}

impl RawPassword {
    fn is_given(&self) -> bool {
        self.password.is_some() || self.password_file.is_some() || self.password_credential.is_some()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawSmtp {
    host: Option<Field<String>>,
    port: Option<Field<u16>>,
    tls: Field<TlsMode>,
    ca_file: Option<Field<PathBuf>>,
    username: Option<Field<String>>,
    auth: Option<Field<oauth::AuthKind>>,
    oauth2: Option<Field<String>>,
    #[serde(flatten)]
    password: RawPassword,
    give_up_after_hours: Option<Field<u64>>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// The SMTP server acknowledgements are delivered through.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    /// Username and how to sign in (AUTH), when the server wants it.
    pub credentials: Option<(String, Login)>,
    /// Transient failures are retried this long after the acknowledgement was queued.
    pub give_up_after: chrono::Duration,
}

/// How a connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    #[default]
    Implicit,
    /// Plain connection upgraded with STARTTLS; refused if the server does not offer it.
    Starttls,
    /// No encryption: only to a loopback address.
    None,
}

/// What happens to a message on the server once its ticket is committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum After {
    Seen,
    #[default]
    Move,
    Delete,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawMailbox {
    name: Option<Field<String>>,
    address: Option<Field<String>>,
    host: Option<Field<String>>,
    port: Option<Field<u16>>,
    tls: Field<TlsMode>,
    ca_file: Option<Field<PathBuf>>,
    username: Option<Field<String>>,
    auth: Option<Field<oauth::AuthKind>>,
    oauth2: Option<Field<String>>,
    #[serde(flatten)]
    password: RawPassword,
    folder: Option<Field<String>>,
    after: Field<After>,
    processed_folder: Option<Field<String>>,
    failed_folder: Option<Field<String>>,
    idle: Option<Field<bool>>,
    poll_interval_secs: Option<Field<u64>>,
    authserv_id: Option<Field<String>>,
    #[serde(flatten)]
    unknown: Unknown,
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
    pub login: Login,
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

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawHelpdesk {
    name: Option<Field<String>>,
    address: Option<Field<String>>,
    own_addresses: Field<Vec<String>>,
    internal_domains: Option<Field<Vec<String>>>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawIngest {
    max_message_bytes: Option<Field<u64>>,
    /// Deprecated home of `customers.customer_address`.
    customer_address: Option<Field<AddressSource>>,
    reopen_closed: Option<Field<bool>>,
    batch_size: Option<Field<usize>>,
    authserv_id: Option<Field<String>>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawCustomers {
    customer_address: Option<Field<AddressSource>>,
    auto_create: Option<Field<bool>>,
    auto_create_organisations: Option<Field<bool>>,
    free_mail_domains: Field<Vec<String>>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawTickets {
    tag_prefix: Option<Field<String>>,
    loop_header: Option<Field<String>>,
    follow_up_from: Option<Field<FollowUpFrom>>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawAcknowledgement {
    enabled: Option<Field<bool>>,
    template: Option<Field<PathBuf>>,
    from_name: Option<Field<String>>,
    max_per_sender_per_day: Option<Field<u32>>,
    max_per_domain_per_day: Option<Field<u32>>,
    show_organisation: Option<Field<bool>>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// The built-in defaults, also what `config/postdesk.example.toml` documents.
mod defaults {
    pub const HELPDESK_NAME: &str = "Helpdesk";
    pub const HELPDESK_ADDRESS: &str = "support@helpdesk.example";
    pub const MAX_MESSAGE_BYTES: u64 = 25 * 1024 * 1024;
    /// A form's uploads are sent as base64 inside a message: a third larger.
    pub const MAX_UPLOAD_BYTES: u64 = 10 * 1024 * 1024;
    /// A larger batch writes fewer pages a message (an index page changed by many
    /// messages is written once); draining 10,000 ~8 KB messages (benches/imap.rs) with
    /// batches of 200 / 300 / 400 / 500 peaked at 43 / 49 / 59 / 56–61 MB resident and
    /// went at ~5,000 / 5,150 / 5,700 / 5,700–6,000 msg/s: 400 gains the speed and
    /// keeps the peak under 64 MB (three batches are in memory at once: one downloading,
    /// one parsed, one being written).
    pub const BATCH_SIZE: usize = 400;
    pub const TAG_PREFIX: &str = "Ticket#";
    pub const LOOP_HEADER: &str = "X-Postdesk-Loop";
    pub const MAX_PER_SENDER_PER_DAY: u32 = 10;
    pub const MAX_PER_DOMAIN_PER_DAY: u32 = 50;
    pub const GIVE_UP_AFTER_HOURS: u64 = 48;
    pub const POLL_INTERVAL_SECS: u64 = 60;
}

#[derive(Debug)]
pub struct Config {
    /// The file this was read from, if any.
    pub file: Option<PathBuf>,
    pub database: Database,
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
    /// The web console, if `[web] listen` is set.
    pub web: Option<WebConfig>,
    pub portal: PortalConfig,
    /// The `[oauth2.NAME]` sections, by name.
    pub oauth2: BTreeMap<String, OAuthProvider>,
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
/// Passwords are not read here (see `secret::PasswordSource`); systemd credentials are
/// looked up in `credentials_dir`, else `$CREDENTIALS_DIRECTORY`.
pub fn load(path: Option<&Path>, credentials_dir: Option<&Path>) -> Result<Config, ConfigError> {
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
    let credentials_dir =
        credentials_dir.map(Path::to_path_buf).or_else(|| std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from));
    validate(raw, file, &Context { base, credentials_dir })
}

fn describe_load_error(file: Option<&Path>, e: &config::ConfigError) -> String {
    match file {
        Some(f) => format!("{}: {e}", f.display()),
        None => e.to_string(),
    }
}

/// Where relative paths and credentials are found.
struct Context {
    /// The config file's directory.
    base: PathBuf,
    credentials_dir: Option<PathBuf>,
}

/// Collects problems instead of stopping at the first, so one run shows them all.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(Problem { key: key.to_owned(), message: message.into() });
    }

    /// Every key of a section that postdesk does not know.
    fn unknown(&mut self, section: &str, unknown: &Unknown) {
        for key in unknown.keys() {
            let dotted = if section.is_empty() { key.clone() } else { format!("{section}.{key}") };
            self.add(&dotted, "unknown key");
        }
    }

    /// The value, or `None` (and a problem) when it has the wrong type.
    fn get<T>(&mut self, key: &str, field: Option<Field<T>>) -> Option<T> {
        match field? {
            Field::Ok(v) => Some(v),
            Field::Bad(message) => {
                self.add(key, message);
                None
            }
        }
    }

    /// The value, else `default` (given or of the wrong type: the latter is a problem).
    fn or<T>(&mut self, key: &str, field: Option<Field<T>>, default: T) -> T {
        self.get(key, field).unwrap_or(default)
    }

    /// A value that must be given.
    fn required<T: Default>(&mut self, key: &str, field: Option<Field<T>>) -> T {
        if field.is_none() {
            self.add(key, "is required");
        }
        self.get(key, field).unwrap_or_default()
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

    fn ca_file(&mut self, key: &str, file: Option<Field<PathBuf>>, base: &Path) -> Option<PathBuf> {
        let path = base.join(self.get(key, file)?);
        if !path.is_file() {
            self.add(key, format!("{} does not exist", path.display()));
        }
        Some(path)
    }

    /// An RFC 8601 authserv-id: one token, as the receiving server writes it.
    fn authserv_id(&mut self, key: &str, value: Option<Field<String>>) -> Option<String> {
        let id = self.get(key, value)?.trim().to_owned();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic() && !b";()".contains(&b)) {
            self.add(key, "must be the authserv-id the receiving server writes, e.g. \"mx.helpdesk.example\"");
        }
        Some(id)
    }

    fn domain(&mut self, key: &str, value: &str) -> String {
        address::normalise_domain(value).unwrap_or_else(|| {
            self.add(key, format!("{value:?} is not a domain name"));
            String::new()
        })
    }

    /// Exactly one of `password`, `password_file` or `password_credential`; the
    /// password itself is read only when it is used.
    fn password(&mut self, key: &str, raw: RawPassword, cx: &Context) -> Option<PasswordSource> {
        let inline = self.get(key, raw.password).map(|p| PasswordSource::Inline(Secret::new(p)));
        let file = self.get(&format!("{key}_file"), raw.password_file).map(|f| PasswordSource::File(cx.base.join(f)));
        let credential = self
            .get(&format!("{key}_credential"), raw.password_credential)
            .map(|name| PasswordSource::Credential { name, dir: cx.credentials_dir.clone() });
        let mut given = [inline, file, credential].into_iter().flatten();
        let name = key.rsplit('.').next().unwrap_or(key);
        let ways = format!("{name}, {name}_file or {name}_credential");
        match (given.next(), given.next()) {
            (Some(source), None) => Some(source),
            (None, _) => {
                self.add(key, format!("one of {ways} is required"));
                None
            }
            (Some(_), Some(_)) => {
                self.add(key, format!("give only one of {ways}"));
                None
            }
        }
    }
}

fn validate(raw: Raw, file: Option<PathBuf>, cx: &Context) -> Result<Config, ConfigError> {
    let mut p = Problems::default();
    p.unknown("", &raw.unknown);
    for (section, unknown) in [
        ("helpdesk", &raw.helpdesk.unknown),
        ("database", &raw.database.unknown),
        ("ingest", &raw.ingest.unknown),
        ("customers", &raw.customers.unknown),
        ("tickets", &raw.tickets.unknown),
        ("acknowledgement", &raw.acknowledgement.unknown),
        ("metrics", &raw.metrics.unknown),
        ("web", &raw.web.unknown),
        ("portal", &raw.portal.unknown),
    ] {
        p.unknown(section, unknown);
    }
    let h = raw.helpdesk;
    let address_text = p.or("helpdesk.address", h.address, defaults::HELPDESK_ADDRESS.to_owned());
    let helpdesk_address = p.address("helpdesk.address", &address_text);
    let mut own_addresses = vec![helpdesk_address.clone()];
    for a in p.or("helpdesk.own_addresses", Some(h.own_addresses), Vec::new()) {
        own_addresses.push(p.address("helpdesk.own_addresses", &a));
    }
    let internal_domains = match p.get("helpdesk.internal_domains", h.internal_domains) {
        Some(domains) => domains.iter().map(|d| p.domain("helpdesk.internal_domains", d)).collect(),
        None => vec![address::domain_of(&helpdesk_address).to_owned()],
    };
    let free_mail = p.or("customers.free_mail_domains", Some(raw.customers.free_mail_domains), Vec::new());
    let extra_free_mail = free_mail.iter().map(|d| p.domain("customers.free_mail_domains", d)).collect();
    let database = database::database(&mut p, raw.database, cx);
    let ingest = raw.ingest;
    let max_message_bytes = p.or("ingest.max_message_bytes", ingest.max_message_bytes, defaults::MAX_MESSAGE_BYTES);
    if !(1024..=1 << 30).contains(&max_message_bytes) {
        p.add("ingest.max_message_bytes", "must be between 1024 and 1073741824");
    }
    let batch_size = p.or("ingest.batch_size", ingest.batch_size, defaults::BATCH_SIZE);
    if !(1..=10_000).contains(&batch_size) {
        p.add("ingest.batch_size", "must be between 1 and 10000");
    }
    let tag = p.or("tickets.tag_prefix", raw.tickets.tag_prefix, defaults::TAG_PREFIX.to_owned());
    if tag.is_empty() || tag.chars().any(|c| c.is_whitespace() || c.is_control() || "[]".contains(c)) {
        p.add("tickets.tag_prefix", "must be non-empty, without spaces or brackets");
    } else if tag.ends_with(|c: char| c.is_ascii_digit()) {
        p.add("tickets.tag_prefix", "must not end with a digit");
    }
    let header = p.or("tickets.loop_header", raw.tickets.loop_header, defaults::LOOP_HEADER.to_owned());
    if header.is_empty() || !header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        p.add("tickets.loop_header", "must be a header name of letters, digits and '-'");
    }
    let customer_address = match (
        p.get("customers.customer_address", raw.customers.customer_address),
        p.get("ingest.customer_address", ingest.customer_address),
    ) {
        (Some(a), Some(b)) if a != b => {
            p.add("ingest.customer_address", "conflicts with customers.customer_address (its new home); remove it");
            a
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => AddressSource::From,
    };
    let ack = raw.acknowledgement;
    let max_per_sender_per_day =
        p.or("acknowledgement.max_per_sender_per_day", ack.max_per_sender_per_day, defaults::MAX_PER_SENDER_PER_DAY);
    let max_per_domain_per_day =
        p.or("acknowledgement.max_per_domain_per_day", ack.max_per_domain_per_day, defaults::MAX_PER_DOMAIN_PER_DAY);
    if max_per_domain_per_day < max_per_sender_per_day {
        p.add("acknowledgement.max_per_domain_per_day", "must be at least acknowledgement.max_per_sender_per_day");
    }
    let ingest_authserv_id = p.authserv_id("ingest.authserv_id", ingest.authserv_id);
    let oauth2 = oauth::providers(&mut p, raw.oauth2, cx);
    let mailboxes: Vec<MailboxConfig> =
        raw.mailbox.into_iter().enumerate().filter_map(|(i, m)| mailbox(&mut p, i, m, &oauth2, cx)).collect();
    for (i, m) in mailboxes.iter().enumerate() {
        if mailboxes[..i].iter().any(|other| other.name == m.name) {
            p.add(&format!("mailbox[{i}].name"), format!("{:?} is used by another mailbox", m.name));
        }
        if !own_addresses.contains(&m.address) {
            own_addresses.push(m.address.clone());
        }
    }
    let smtp = raw.smtp.and_then(|s| smtp(&mut p, s, &oauth2, cx));
    let metrics_listen = p.get("metrics.listen", raw.metrics.listen).and_then(|text| metrics_listen(&mut p, &text));
    let web = web(&mut p, raw.web);
    let portal = portal(&mut p, raw.portal, max_message_bytes);
    let template = p.get("acknowledgement.template", ack.template);
    let template = load_template(template.as_deref(), &cx.base).unwrap_or_else(|e| {
        p.add("acknowledgement.template", e);
        AckTemplate::new(String::new()).expect("an empty template compiles")
    });
    let policy = Policy {
        resolve: ResolvePolicy {
            prefer: customer_address,
            auto_create_customers: p.or("customers.auto_create", raw.customers.auto_create, true),
            auto_create_organisations: p.or(
                "customers.auto_create_organisations",
                raw.customers.auto_create_organisations,
                true,
            ),
            extra_free_mail,
            internal_domains,
        },
        ack: {
            let name = p.or("helpdesk.name", h.name, defaults::HELPDESK_NAME.to_owned());
            AckPolicy {
                enabled: p.or("acknowledgement.enabled", ack.enabled, true),
                from_name: p.or("acknowledgement.from_name", ack.from_name, name.clone()),
                helpdesk_name: name,
                max_per_sender_per_day,
                max_per_domain_per_day,
                show_organisation: p.or("acknowledgement.show_organisation", ack.show_organisation, false),
                template,
            }
        },
        own_addresses,
        tag_prefix: tag,
        loop_header: header,
        reopen_closed: p.or("ingest.reopen_closed", ingest.reopen_closed, true),
        follow_up_from: p.or("tickets.follow_up_from", raw.tickets.follow_up_from, FollowUpFrom::Organisation),
        max_message_bytes: max_message_bytes as usize,
    };
    if !p.0.is_empty() {
        return Err(ConfigError::Invalid(p.0));
    }
    Ok(Config {
        file,
        database,
        helpdesk_address,
        batch_size,
        ingest_authserv_id,
        policy,
        mailboxes,
        smtp,
        metrics_listen,
        web,
        portal,
        oauth2,
    })
}

fn portal(p: &mut Problems, raw: RawPortal, max_message_bytes: u64) -> PortalConfig {
    // Uploads travel base64-encoded in the message a form becomes: a third larger.
    let most = max_message_bytes / 4 * 3;
    let max_upload_bytes = p.or("portal.max_upload_bytes", raw.max_upload_bytes, defaults::MAX_UPLOAD_BYTES.min(most));
    if max_upload_bytes > most {
        let limit =
            format!("must be at most {most}, three quarters of ingest.max_message_bytes: a form becomes a message");
        p.add("portal.max_upload_bytes", limit);
    }
    PortalConfig {
        public_form: p.or("portal.public_form", raw.public_form, false),
        max_upload_bytes: max_upload_bytes as usize,
    }
}

fn web(p: &mut Problems, raw: RawWeb) -> Option<WebConfig> {
    let text = p.get("web.listen", raw.listen);
    let base_url = p.get("web.base_url", raw.base_url);
    let secure_cookies = p.or("web.secure_cookies", raw.secure_cookies, false);
    let listen = match text?.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            p.add("web.listen", "not an address:port such as 127.0.0.1:8080".to_owned());
            return None;
        }
    };
    let base_url = base_url.unwrap_or_else(|| format!("http://{listen}")).trim_end_matches('/').to_owned();
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        p.add("web.base_url", format!("{base_url:?} is not an http:// or https:// URL"));
    }
    Some(WebConfig { listen, base_url, secure_cookies })
}

fn metrics_listen(p: &mut Problems, text: &str) -> Option<std::net::SocketAddr> {
    match text.parse::<std::net::SocketAddr>() {
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
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn mailbox(
    p: &mut Problems,
    i: usize,
    raw: RawMailbox,
    providers: &BTreeMap<String, OAuthProvider>,
    cx: &Context,
) -> Option<MailboxConfig> {
    let key = |field: &str| format!("mailbox[{i}].{field}");
    let before = p.0.len();
    p.unknown(&format!("mailbox[{i}]"), &raw.unknown);
    let name_given = raw.name.is_some();
    let name = p.required(&key("name"), raw.name);
    if name_given && name.trim().is_empty() {
        p.add(&key("name"), "must not be empty");
    }
    let address_text = p.required(&key("address"), raw.address);
    let address = p.address(&key("address"), &address_text);
    let host = p.required(&key("host"), raw.host);
    let tls = p.or(&key("tls"), Some(raw.tls), TlsMode::Implicit);
    p.endpoint(&key, &host, tls);
    let username = p.required(&key("username"), raw.username);
    let poll_interval_secs = p.or(&key("poll_interval_secs"), raw.poll_interval_secs, defaults::POLL_INTERVAL_SECS);
    if poll_interval_secs == 0 {
        p.add(&key("poll_interval_secs"), "must be at least 1");
    }
    let mut folder = |field: &str, value: Option<Field<String>>, default: &str| {
        let folder = p.or(&key(field), value, default.to_owned());
        if folder.trim().is_empty() {
            p.add(&key(field), "must not be empty");
        }
        folder
    };
    let (watched, processed_folder, failed_folder) = (
        folder("folder", raw.folder, "INBOX"),
        folder("processed_folder", raw.processed_folder, "Processed"),
        folder("failed_folder", raw.failed_folder, "Failed"),
    );
    let ca_file = p.ca_file(&key("ca_file"), raw.ca_file, &cx.base);
    let login = oauth::login(p, &format!("mailbox[{i}]"), raw.auth, raw.oauth2, raw.password, providers, cx);
    let default_port = if tls == TlsMode::Implicit { 993 } else { 143 };
    let port = p.or(&key("port"), raw.port, default_port);
    let after = p.or(&key("after"), Some(raw.after), After::Move);
    let idle = p.or(&key("idle"), raw.idle, true);
    let authserv_id = p.authserv_id(&key("authserv_id"), raw.authserv_id);
    (p.0.len() == before).then(|| MailboxConfig {
        name,
        address,
        host,
        port,
        tls,
        ca_file,
        username,
        login: login.expect("no problems means a login"),
        folder: watched,
        after,
        processed_folder,
        failed_folder,
        idle,
        poll_interval: std::time::Duration::from_secs(poll_interval_secs),
        authserv_id,
    })
}

fn smtp(
    p: &mut Problems,
    raw: RawSmtp,
    providers: &BTreeMap<String, OAuthProvider>,
    cx: &Context,
) -> Option<SmtpConfig> {
    let key = |field: &str| format!("smtp.{field}");
    let before = p.0.len();
    p.unknown("smtp", &raw.unknown);
    let host = p.required(&key("host"), raw.host);
    let tls = p.or(&key("tls"), Some(raw.tls), TlsMode::Implicit);
    p.endpoint(&key, &host, tls);
    let ca_file = p.ca_file(&key("ca_file"), raw.ca_file, &cx.base);
    let given = raw.password.is_given() || raw.auth.is_some();
    let credentials = match p.get(&key("username"), raw.username) {
        Some(user) => {
            oauth::login(p, "smtp", raw.auth, raw.oauth2, raw.password, providers, cx).map(|login| (user, login))
        }
        None if given => {
            p.add(&key("username"), "a password or auth is configured but no username");
            None
        }
        None => None,
    };
    let give_up_after_hours = p.or(&key("give_up_after_hours"), raw.give_up_after_hours, defaults::GIVE_UP_AFTER_HOURS);
    if give_up_after_hours == 0 {
        p.add(&key("give_up_after_hours"), "must be at least 1");
    }
    let default_port = match tls {
        TlsMode::Implicit => 465,
        TlsMode::Starttls => 587,
        TlsMode::None => 25,
    };
    let port = p.or(&key("port"), raw.port, default_port);
    (p.0.len() == before).then(|| SmtpConfig {
        host,
        port,
        tls,
        ca_file,
        credentials,
        give_up_after: chrono::Duration::hours(give_up_after_hours as i64),
    })
}

/// Compiles the template and renders it once with sample values: a syntax error or an
/// unknown variable is a configuration problem, not a failure at the first ticket.
fn load_template(path: Option<&Path>, base: &Path) -> Result<AckTemplate, String> {
    let source = match path {
        None => DEFAULT_TEMPLATE.to_owned(),
        Some(path) => {
            let path = base.join(path);
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
        }
    };
    let template = AckTemplate::new(source).map_err(|e| format!("template does not compile: {e}"))?;
    template.check().map_err(|e| format!("template does not render: {e}"))?;
    Ok(template)
}

impl Config {
    /// The `[oauth2.NAME]` section (validation made sure every reference has one).
    pub fn oauth_provider(&self, name: &str) -> Option<&OAuthProvider> {
        self.oauth2.get(name)
    }

    /// Whether a mailbox or `[smtp]` signs in with provider `name`.
    pub fn uses_provider(&self, name: &str) -> bool {
        self.mailboxes.iter().any(|m| m.login.uses(name))
            || self.smtp.iter().filter_map(|s| s.credentials.as_ref()).any(|(_, login)| login.uses(name))
    }

    /// Every password the file names can be read: `run` and `check-config` check this at
    /// once, naming the keys; other commands never read the passwords.
    pub fn check_passwords(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        for (i, m) in self.mailboxes.iter().enumerate() {
            if let Some(Err(e)) = m.login.password().map(PasswordSource::read) {
                p.add(&format!("mailbox[{i}].password"), e);
            }
        }
        if let Some((_, login)) = self.smtp.as_ref().and_then(|s| s.credentials.as_ref()) {
            if let Some(Err(e)) = login.password().map(PasswordSource::read) {
                p.add("smtp.password", e);
            }
        }
        for (name, provider) in &self.oauth2 {
            if let Some(Err(e)) = provider.client_secret.as_ref().map(PasswordSource::read) {
                p.add(&format!("oauth2.{name}.client_secret"), e);
            }
        }
        if p.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(p.0))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: Raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        validate(raw, None, &Context { base: PathBuf::new(), credentials_dir: None })
    }

    #[test]
    fn defaults_are_valid() {
        let c = from_toml("").unwrap();
        assert_eq!(c.database, Database::Sqlite(PathBuf::from("postdesk.db")));
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
        assert_eq!(err, "tickets.follow_up_from: \"everybody\" is not one of participants, organisation, anyone");
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
        assert_eq!(err, "database.paht: unknown key");
        let err = from_toml("[databse]\npath = 'x.db'\n").unwrap_err().to_string();
        assert_eq!(err, "databse: unknown key");
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
        assert_eq!(format!("{:?}", m.login), "Password(Inline(Secret(<redacted>)))");
        assert!(c.policy.own_addresses.contains(&"support@helpdesk.example".to_owned()));
    }

    #[test]
    fn mailbox_problems_name_the_mailbox() {
        let cases = [
            ("", "mailbox[0].password", "one of password, password_file or password_credential is required"),
            ("password = 'a'\npassword_file = '/x'\n", "mailbox[0].password", "give only one"),
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
    fn every_wrong_type_is_named_in_one_run() {
        let err = from_toml(&format!(
            "[ingest]\nbatch_size = 'many'\n[acknowledgement]\nenabled = 'maybe'\nmax_per_sender_per_day = -1\n\
             {MAILBOX}password = 'a'\ntls = 'maybe'\nport = 99999\n"
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "ingest.batch_size: \"many\" is not a whole number of 0 or more; \
             acknowledgement.max_per_sender_per_day: -1 is not a whole number from 0 to 4294967295; \
             mailbox[0].tls: \"maybe\" is not one of implicit, starttls, none; \
             mailbox[0].port: 99999 is not a whole number from 0 to 65535; \
             acknowledgement.enabled: \"maybe\" is not true or false"
        );
    }

    #[test]
    fn passwords_are_not_read_when_the_config_is_loaded() {
        let c = from_toml(&format!("{MAILBOX}password_file = '/nonexistent/pw'\n")).unwrap();
        let err = c.check_passwords().unwrap_err().to_string();
        assert!(err.starts_with("mailbox[0].password: cannot read /nonexistent/pw"), "{err}");
    }

    #[test]
    fn a_template_with_an_unknown_variable_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ack.j2"), "Hello {{ customer_nmae }}").unwrap();
        let err = load_template(Some(Path::new("ack.j2")), dir.path()).err().unwrap();
        assert!(err.starts_with("template does not render: "), "{err}");
    }

    #[test]
    fn a_postgresql_url_selects_postgresql_with_tls_verified() {
        let c = from_toml("[database]\nurl = 'postgres://postdesk@db.example:5432/desk'\npassword = 'x'\n").unwrap();
        let Database::Postgres(pg) = &c.database else { panic!("{:?}", c.database) };
        assert_eq!((pg.url.as_str(), pg.tls), ("postgres://postdesk@db.example:5432/desk", DatabaseTls::Verify));
        assert!(pg.password.is_some());
        assert_eq!(c.database.shown(), "postgres://postdesk@db.example:5432/desk");
    }

    #[test]
    fn database_problems_name_their_key() {
        let err = |text: &str| from_toml(text).unwrap_err().to_string();
        assert_eq!(
            err("[database]\npath = 'x.db'\nurl = 'postgres://u@h/d'\n"),
            "database: give either path (SQLite) or url (PostgreSQL), not both"
        );
        assert!(err("[database]\nurl = 'mysql://u@h/d'\n").starts_with("database.url: must be a postgres:// URL"));
        assert!(err("[database]\nurl = 'postgres://u:secret@h/d'\n").contains("database.url: holds a password"));
        assert!(err("[database]\nurl = 'postgres://h/d'\n").contains("database.url: names no user"));
        assert!(err("[database]\nurl = 'postgres://u@db.example/d'\ntls = 'none'\n")
            .starts_with("database.tls: \"none\" sends the password"));
        assert!(from_toml("[database]\nurl = 'postgres://u@127.0.0.1/d'\ntls = 'none'\n").is_ok());
        assert!(err("[database]\nurl = 'postgres://u@localhost/d?hostaddr=203.0.113.5'\ntls = 'none'\n")
            .starts_with("database.tls: \"none\""));
        assert!(err("[database]\nurl = 'postgres://u@h/d'\ntls = 'maybe'\n").contains("one of verify, none"));
        assert_eq!(err("[database]\ntls = 'none'\n"), "database.tls: is for PostgreSQL: set database.url too");
        assert_eq!(
            err("[database]\nurl = 'postgres://u@h/d'\npassword = 'a'\npassword_file = 'b'\n"),
            "database.password: give only one of password, password_file or password_credential"
        );
    }

    /// The example's commented PostgreSQL keys are valid once uncommented (`ca_file`
    /// aside: it names a file of the reader's machine).
    #[test]
    fn the_example_postgresql_keys_are_valid() {
        let example = include_str!("../config/postdesk.example.toml");
        let keys: String = example
            .lines()
            .filter(|l| ["# url = ", "# password_credential = ", "# tls = "].iter().any(|k| l.starts_with(k)))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let c = from_toml(&format!("[database]\n{keys}")).unwrap();
        assert!(matches!(c.database, Database::Postgres(_)), "{keys}");
    }

    #[test]
    fn a_migration_target_is_checked_as_the_url_is() {
        let sqlite = Database::Sqlite(PathBuf::from("x.db"));
        let target = postgres_target("postgres://u@db.example/d", &sqlite).unwrap();
        assert_eq!((target.tls, target.password), (DatabaseTls::Verify, None));
        let err = postgres_target("postgres://u:pw@db.example/d", &sqlite).unwrap_err();
        assert!(err.starts_with("database.url: holds a password"), "{err}");
    }
}
