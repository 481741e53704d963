//! A session as stored, and its id.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::sso::identity::ProtocolHandle;

/// The browser's session id: 256 random bits as 64 hex characters. Opaque: it names a
/// server-side record and carries nothing itself.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SessionId(String);

impl SessionId {
    /// A fresh id from the OS-seeded CSPRNG.
    pub(crate) fn new() -> SessionId {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        SessionId(hex::encode(b))
    }

    /// A cookie value, if it has the shape of an id (anything else is not looked up).
    pub(crate) fn parse(s: &str) -> Option<SessionId> {
        (s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| SessionId(s.to_string()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The store key: a hash of the id, so a copy of the store (a Redis dump) holds no usable
    /// cookie values.
    pub(crate) fn store_key(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::digest(self.0.as_bytes());
        let mut key = String::with_capacity(6 + 64);
        key.push_str("sso:s:");
        // By table: `hex::encode` goes through a char iterator, which cost more than the hash
        // itself on every checked request.
        for b in digest {
            key.push(char::from(HEX[usize::from(b >> 4)]));
            key.push(char::from(HEX[usize::from(b & 15)]));
        }
        key
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the id itself (logs must not carry cookie values).
        f.write_str("SessionId(..)")
    }
}

/// One signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    /// The tenant it was made on; not valid on any other.
    pub tenant: Option<String>,
    /// The provider that vouched, for logout and metrics.
    pub provider: String,
    /// The mapping-field value handed to Moodle (a re-hand-off needs it).
    pub user: String,
    /// Passed again at a re-hand-off so Moodle's profile stays filled.
    pub firstname: Option<String>,
    pub lastname: Option<String>,
    pub email: Option<String>,
    /// The protocol's handle: what logout messages name, and the id_token_hint.
    pub handle: ProtocolHandle,
    /// The logout form's CSRF token (a POST to /auth/logout must carry it).
    pub csrf: String,
    /// Unix seconds at login: the absolute lifetime counts from here.
    pub created: u64,
    /// Unix seconds of the last request seen: the idle lifetime counts from here.
    pub last_seen: u64,
}
