//! Which XML-signature algorithms are accepted. samael checks an allow-list before any
//! cryptography when given one; without one it accepts whatever xmlsec supports, SHA-1 included.

use samael::crypto::AllowedSignatureAlgorithm as Alg;

/// The SHA-2 family: what every current IdP signs with.
pub(crate) const SHA2: &[Alg] = &[
    Alg::RsaSha256,
    Alg::RsaSha384,
    Alg::RsaSha512,
    Alg::EcdsaSha256,
    Alg::EcdsaSha384,
    Alg::EcdsaSha512,
];

/// The list handed to samael: SHA-2 only, unless the provider is configured for SHA-1, which
/// samael can only allow by lifting the list (its list has no SHA-1 entry).
pub(crate) fn allowed(allow_sha1: bool) -> Option<Vec<Alg>> {
    (!allow_sha1).then(|| SHA2.to_vec())
}
