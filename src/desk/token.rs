//! The secrets the web side hands out (session tokens, CSRF tokens, sign-in and
//! confirmation links): 256 random bits as hex, stored only as their SHA-256, so that a
//! copy of the database signs nobody in (a link's mail holds it in the outbox only until
//! it is sent or given up).

use sha2::{Digest, Sha256};

use super::error::DeskError;
use crate::store::StoreError;

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn random_hex() -> Result<String, DeskError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| StoreError::Unavailable(format!("no randomness: {e}")))?;
    Ok(hex::encode(bytes))
}
