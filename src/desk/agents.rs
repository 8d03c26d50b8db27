//! The agents of the web console: adding them, their roles, passwords (Argon2id),
//! disabling them, signing in, and sessions. A session is a random token the browser
//! holds; only its SHA-256 is stored, with the CSRF token of the session's forms.

use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::error::{DeskError, Missing};
use super::token::{random_hex, token_hash};
use crate::store::agents::{self as store, AgentRow};
use crate::store::{StoreError, Tx};

/// How long a session lasts without signing in again: a working day.
pub const SESSION_HOURS: i64 = 12;
/// The shortest password an agent may have.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// What an agent may do. Every role reads and answers tickets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, and managing agents.
    Admin,
    /// Tickets, and creating and editing customers and organisations.
    Editor,
    /// Tickets.
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Agent => "agent",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        [Role::Admin, Role::Editor, Role::Agent].into_iter().find(|r| r.as_str() == text)
    }

    pub fn may_edit_customers(self) -> bool {
        matches!(self, Role::Admin | Role::Editor)
    }

    pub fn may_manage_agents(self) -> bool {
        self == Role::Admin
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: String,
}

impl TryFrom<AgentRow> for Agent {
    type Error = StoreError;

    fn try_from(row: AgentRow) -> Result<Agent, StoreError> {
        let role = Role::parse(&row.role)
            .ok_or_else(|| StoreError::Conflict(format!("agent {} has an unknown role {:?}", row.email, row.role)))?;
        Ok(Agent {
            id: row.id,
            email: row.email,
            name: row.name,
            role,
            disabled: row.disabled,
            created_at: row.created_at,
        })
    }
}

/// "New agent": the address is normalised by the caller.
#[derive(Debug)]
pub struct Add {
    pub email: String,
    pub name: String,
    pub role: Role,
    pub password: String,
}

/// A session just opened: the token goes into the browser's cookie, the CSRF token into
/// every form.
#[derive(Debug)]
pub struct NewSession {
    pub token: String,
    pub csrf: String,
}

/// The agent a session belongs to.
#[derive(Debug)]
pub struct SignedIn {
    pub agent: Agent,
    pub csrf: String,
}

pub fn add(tx: &Tx, cmd: &Add, now: DateTime<Utc>) -> Result<Agent, DeskError> {
    if store::by_email(tx, &cmd.email)?.is_some() {
        return Err(DeskError::AgentTaken(cmd.email.clone()));
    }
    let name = cmd.name.trim();
    if name.is_empty() {
        return Err(DeskError::AgentUnnamed);
    }
    let id = store::create(tx, &cmd.email, name, cmd.role.as_str(), &hash(&cmd.password)?, now)?;
    get(tx, id)
}

/// Every agent, by name.
pub fn list(tx: &Tx) -> Result<Vec<Agent>, DeskError> {
    Ok(store::list(tx)?.into_iter().map(Agent::try_from).collect::<Result<_, _>>()?)
}

pub fn get(tx: &Tx, id: i64) -> Result<Agent, DeskError> {
    let row = store::by_id(tx, id)?.ok_or_else(|| Missing::Agent(format!("#{id}")))?;
    Ok(row.try_into()?)
}

fn find(tx: &Tx, email: &str) -> Result<AgentRow, DeskError> {
    Ok(store::by_email(tx, email)?.ok_or_else(|| Missing::Agent(email.to_owned()))?)
}

/// A new password; the agent's sessions end.
pub fn passwd(tx: &Tx, email: &str, password: &str) -> Result<Agent, DeskError> {
    let row = find(tx, email)?;
    store::set_password(tx, row.id, &hash(password)?)?;
    store::delete_sessions(tx, row.id)?;
    get(tx, row.id)
}

/// The agent can no longer sign in, and their sessions end.
pub fn disable(tx: &Tx, email: &str) -> Result<Agent, DeskError> {
    let row = find(tx, email)?;
    store::set_disabled(tx, row.id, true)?;
    store::delete_sessions(tx, row.id)?;
    get(tx, row.id)
}

/// The agent with this address and password. A wrong password, an unknown address and a
/// disabled agent are the same error, in about the same time, so that nobody learns
/// which addresses are agents'.
pub fn authenticate(tx: &Tx, email: &str, password: &str) -> Result<Agent, DeskError> {
    let email = email.trim().to_lowercase();
    let row = store::by_email(tx, &email)?;
    let stored = row.as_ref().map_or(DUMMY_HASH.as_str(), |r| r.password_hash.as_str());
    let matches = verify(stored, password);
    match row {
        Some(row) if matches && !row.disabled => Ok(row.try_into()?),
        _ => Err(DeskError::BadCredentials),
    }
}

pub fn open_session(tx: &Tx, agent_id: i64, now: DateTime<Utc>) -> Result<NewSession, DeskError> {
    store::delete_expired_sessions(tx, now)?;
    let session = NewSession { token: random_hex()?, csrf: random_hex()? };
    let expires = now + Duration::hours(SESSION_HOURS);
    store::create_session(tx, &token_hash(&session.token), agent_id, &session.csrf, now, expires)?;
    Ok(session)
}

/// The session of a token, if it is one, unexpired, of an agent not disabled.
pub fn session(tx: &Tx, token: &str, now: DateTime<Utc>) -> Result<Option<SignedIn>, DeskError> {
    match store::session(tx, &token_hash(token), now)? {
        Some((row, csrf)) => Ok(Some(SignedIn { agent: row.try_into()?, csrf })),
        None => Ok(None),
    }
}

pub fn close_session(tx: &Tx, token: &str) -> Result<(), DeskError> {
    Ok(store::delete_session(tx, &token_hash(token))?)
}

/// An Argon2id PHC string for a password long enough.
fn hash(password: &str) -> Result<String, DeskError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(DeskError::WeakPassword { min: MIN_PASSWORD_CHARS });
    }
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| StoreError::Unavailable(format!("no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let hashed = Argon2::default().hash_password(password.as_bytes(), &salt);
    Ok(hashed.map_err(|e| StoreError::Unavailable(format!("hashing the password: {e}")))?.to_string())
}

fn verify(stored: &str, password: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Verified against when the address is nobody's, so that it takes as long as a real one.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash("no agent has this password").unwrap_or_else(|_| String::from("$argon2id$")));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desk::testing::{now, store};

    fn ann() -> Add {
        Add {
            email: "ann@helpdesk.example".into(),
            name: "Ann".into(),
            role: Role::Editor,
            password: "a good long password".into(),
        }
    }

    #[test]
    fn a_wrong_password_an_unknown_address_and_a_disabled_agent_look_alike() {
        let mut store = store();
        let added = store.write(|tx| add(tx, &ann(), now())).unwrap();
        assert_eq!((added.role, added.disabled), (Role::Editor, false));
        let signed_in = store.read(|tx| authenticate(tx, " ANN@helpdesk.example", "a good long password")).unwrap();
        assert_eq!(signed_in.id, added.id);
        for (email, password) in [("ann@helpdesk.example", "a bad long password"), ("bob@helpdesk.example", "x")] {
            let err = store.read(|tx| authenticate(tx, email, password)).unwrap_err();
            assert_eq!(err.to_string(), "wrong e-mail or password");
        }
        store.write(|tx| disable(tx, "ann@helpdesk.example")).unwrap();
        let err = store.read(|tx| authenticate(tx, "ann@helpdesk.example", "a good long password")).unwrap_err();
        assert!(matches!(err, DeskError::BadCredentials), "{err}");
    }

    #[test]
    fn short_passwords_and_taken_addresses_are_refused() {
        let mut store = store();
        let short = Add { password: "short".into(), ..ann() };
        let err = store.write(|tx| add(tx, &short, now())).unwrap_err();
        assert_eq!(err.to_string(), "a password needs at least 10 characters");
        let unnamed = Add { name: " ".into(), ..ann() };
        let err = store.write(|tx| add(tx, &unnamed, now())).unwrap_err();
        assert_eq!(err.to_string(), "an agent needs a name");
        store.write(|tx| add(tx, &ann(), now())).unwrap();
        let err = store.write(|tx| add(tx, &ann(), now())).unwrap_err();
        assert_eq!(err.to_string(), "ann@helpdesk.example is already an agent");
    }

    #[test]
    fn sessions_expire_and_end_with_a_new_password_or_disabling() {
        let mut store = store();
        let agent = store.write(|tx| add(tx, &ann(), now())).unwrap();
        let open = |store: &mut crate::store::Store| store.write(|tx| open_session(tx, agent.id, now())).unwrap();
        let found = |store: &mut crate::store::Store, token: &str, at| store.read(|tx| session(tx, token, at)).unwrap();
        let first = open(&mut store);
        let signed_in = found(&mut store, &first.token, now()).expect("a session");
        assert_eq!((signed_in.agent.id, signed_in.csrf.as_str()), (agent.id, first.csrf.as_str()));
        assert!(found(&mut store, &first.csrf, now()).is_none(), "only the token opens it");
        assert!(found(&mut store, &first.token, now() + Duration::hours(SESSION_HOURS)).is_none(), "expired");
        store.write(|tx| close_session(tx, &first.token)).unwrap();
        assert!(found(&mut store, &first.token, now()).is_none(), "signed out");
        let second = open(&mut store);
        store.write(|tx| passwd(tx, "ann@helpdesk.example", "another long password")).unwrap();
        assert!(found(&mut store, &second.token, now()).is_none(), "a new password ends it");
        let third = open(&mut store);
        store.write(|tx| disable(tx, "ann@helpdesk.example")).unwrap();
        assert!(found(&mut store, &third.token, now()).is_none(), "disabling ends it");
    }
}
