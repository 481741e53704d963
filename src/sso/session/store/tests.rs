use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::sso::identity::{HandleRef, Identity, ProtocolHandle};
use crate::store::{MemoryStore, Store};

fn sessions(idle: u64, absolute: u64) -> Sessions {
    Sessions::new(
        Store::Memory(MemoryStore::new(1000)),
        Duration::from_secs(idle),
        Duration::from_secs(absolute),
    )
}

fn identity(sid: &str) -> Identity {
    Identity {
        provider: "campus".into(),
        tenant: Some("acme".into()),
        user: "alice".into(),
        firstname: None,
        lastname: None,
        email: None,
        attributes: BTreeMap::new(),
        handle: ProtocolHandle::Oidc {
            sub: "sub-1".into(),
            sid: Some(sid.into()),
            id_token: "x.y.z".into(),
        },
    }
}

#[tokio::test]
async fn each_login_gets_a_new_id_and_is_found() {
    let s = sessions(60, 600);
    let (a, _) = s.create(&identity("s1")).await.unwrap();
    let (b, _) = s.create(&identity("s1")).await.unwrap();
    assert_ne!(a, b);
    assert_eq!(a.as_str().len(), 64);
    let got = s.get(&a).await.unwrap().unwrap();
    assert_eq!(got.user, "alice");
    assert_eq!(got.tenant.as_deref(), Some("acme"));
}

#[tokio::test]
async fn a_session_past_its_lifetime_is_gone() {
    // A lifetime of zero seconds is already over at the first read.
    let s = sessions(0, 600);
    let (a, _) = s.create(&identity("s1")).await.unwrap();
    assert!(s.get(&a).await.unwrap().is_none());
    let s = sessions(600, 0);
    let (a, _) = s.create(&identity("s1")).await.unwrap();
    assert!(s.get(&a).await.unwrap().is_none());
}

#[tokio::test]
async fn end_by_sid_ends_that_sid_only_and_by_sub_ends_all() {
    let s = sessions(60, 600);
    let (a, _) = s.create(&identity("s1")).await.unwrap();
    let (b, _) = s.create(&identity("s2")).await.unwrap();
    assert_eq!(
        s.end_by_handle("campus", HandleRef::OidcSid("s1"))
            .await
            .unwrap(),
        1
    );
    assert!(s.get(&a).await.unwrap().is_none());
    assert!(s.get(&b).await.unwrap().is_some());
    // Another provider's message names nothing here.
    assert_eq!(
        s.end_by_handle("other", HandleRef::OidcSub("sub-1"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.end_by_handle("campus", HandleRef::OidcSub("sub-1"))
            .await
            .unwrap(),
        1
    );
    assert!(s.get(&b).await.unwrap().is_none());
}

#[test]
fn ids_are_parsed_strictly() {
    assert!(SessionId::parse("abc").is_none());
    assert!(SessionId::parse(&"A".repeat(64)).is_none());
    assert!(SessionId::parse(&"a".repeat(64)).is_some());
    // The store key is not the id.
    let id = SessionId::new();
    assert!(!id.store_key().contains(id.as_str()));
}
