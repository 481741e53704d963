//! The replay cache. The key is the peer's wwwroot and the sha256 of the message's signature,
//! not of the envelope's bytes: Moodle's PKCS#1 v1.5 signature is deterministic, so the same
//! signed XML-RPC text always carries the same signature, while the timestamp and wwwroot sit
//! outside it and RC4 is malleable, so a replay need not be byte-identical to the original.
//! Any message whose signed content was seen within `replay_ttl` is refused (docs/mnet.md
//! says what this costs a peer that sends an identical call twice).

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

/// The store key for a message signed with `signature` by the peer at `wwwroot` (and, with
/// `replay_key: content_and_timestamp`, its timestamp).
pub(crate) fn key(wwwroot: &str, signature: &[u8], timestamp: Option<i64>) -> String {
    let mut h = Sha256::new();
    h.update(wwwroot.as_bytes());
    h.update([0]);
    h.update(signature);
    if let Some(ts) = timestamp {
        h.update([0]);
        h.update(ts.to_be_bytes());
    }
    format!("mnet:replay:{}", hex::encode(h.finalize()))
}

/// True when the message is new (and is now remembered for `ttl`).
pub(crate) async fn first_sighting(
    store: &Store,
    wwwroot: &str,
    signature: &[u8],
    timestamp: Option<i64>,
    ttl: Duration,
) -> Result<bool, StoreError> {
    store
        .set_if_absent(&key(wwwroot, signature, timestamp), b"1", ttl)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn second_sighting_is_refused() {
        let store = Store::Memory(MemoryStore::new(100));
        let ttl = Duration::from_secs(60);
        assert!(first_sighting(&store, "https://a", b"sig", None, ttl)
            .await
            .unwrap());
        assert!(!first_sighting(&store, "https://a", b"sig", None, ttl)
            .await
            .unwrap());
        // Another peer's identical signature bytes are another message.
        assert!(first_sighting(&store, "https://b", b"sig", None, ttl)
            .await
            .unwrap());
        assert_ne!(
            key("https://a", b"sig", None),
            key("https://a", b"sig2", None)
        );
    }

    #[tokio::test]
    async fn with_the_timestamp_in_the_key_a_later_identical_call_is_new() {
        let store = Store::Memory(MemoryStore::new(100));
        let ttl = Duration::from_secs(60);
        assert!(first_sighting(&store, "https://a", b"sig", Some(100), ttl)
            .await
            .unwrap());
        assert!(!first_sighting(&store, "https://a", b"sig", Some(100), ttl)
            .await
            .unwrap());
        assert!(first_sighting(&store, "https://a", b"sig", Some(101), ttl)
            .await
            .unwrap());
    }
}
