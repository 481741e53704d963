//! Harness for the SAML tests (`tests/sso_saml*.rs`), beside the SSO harness (`sso_common`:
//! stand-in Moodle, cookie-jar browser, the edge binary):
//!
//! * [`idp`]: SimpleSAMLphp as the IdP, config generated into a temp dir, its process group
//!   killed on drop;
//! * [`forge`]: hostile Responses made by mutating real signed ones.
#![allow(dead_code)]

pub mod forge;
pub mod idp;
