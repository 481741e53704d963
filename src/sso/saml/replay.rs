//! Each assertion (and each logout message) is accepted once: its ID goes into the store with
//! `set_if_absent`, kept until the message could no longer be accepted anyway (its validity
//! end plus the clock skew), so the cache never grows past the live messages.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

/// The shortest and longest a seen ID is kept.
const MIN_KEEP: Duration = Duration::from_secs(60);
const MAX_KEEP: Duration = Duration::from_secs(24 * 3600);

/// True the first time this (issuer, kind, ID) is seen; false for a replay.
pub(crate) async fn first_use(
    store: &Store,
    kind: &str,
    issuer: &str,
    id: &str,
    keep: Duration,
) -> Result<bool, StoreError> {
    // Hashed: the key length stays fixed whatever the IdP puts in its IDs.
    let digest = Sha256::new()
        .chain_update(issuer.as_bytes())
        .chain_update([0u8])
        .chain_update(id.as_bytes())
        .finalize();
    let key = format!("saml:seen:{kind}:{}", hex::encode(digest));
    store
        .set_if_absent(&key, b"1", keep.clamp(MIN_KEEP, MAX_KEEP))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn second_use_is_a_replay() {
        let store = Store::Memory(MemoryStore::new(100));
        let keep = Duration::from_secs(300);
        assert!(first_use(&store, "assertion", "idp", "_a1", keep)
            .await
            .unwrap());
        assert!(!first_use(&store, "assertion", "idp", "_a1", keep)
            .await
            .unwrap());
        // Another issuer's ID space is its own.
        assert!(first_use(&store, "assertion", "idp2", "_a1", keep)
            .await
            .unwrap());
    }
}
