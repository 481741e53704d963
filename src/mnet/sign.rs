//! Signing: RSA-SHA1 with PKCS#1 v1.5 padding over the raw XML-RPC text, as PHP's
//! `openssl_sign($message, $sig, $key)` does with its default algorithm, and the matching
//! `openssl_verify`. OpenSSL does the RSA work (see docs/mnet.md for why not the `rsa` crate).

use openssl::hash::MessageDigest;
use openssl::pkey::{HasPublic, PKey, PKeyRef, Private};
use openssl::sign::{Signer, Verifier};
use thiserror::Error;

#[derive(Debug, Error)]
#[error("cannot sign: {0}")]
pub(crate) struct SignError(#[from] openssl::error::ErrorStack);

/// The signature of `message` by `key` (deterministic: PKCS#1 v1.5 has no randomness).
pub(crate) fn sign(message: &[u8], key: &PKey<Private>) -> Result<Vec<u8>, SignError> {
    let mut signer = Signer::new(MessageDigest::sha1(), key)?;
    signer.update(message)?;
    Ok(signer.sign_to_vec()?)
}

/// True when `signature` is `key`'s signature of `message`. Any error (a malformed signature, a
/// key of another type) is a failed verification.
pub(crate) fn verify<T: HasPublic>(message: &[u8], signature: &[u8], key: &PKeyRef<T>) -> bool {
    let Ok(mut verifier) = Verifier::new(MessageDigest::sha1(), key) else {
        return false;
    };
    verifier.update(message).is_ok() && verifier.verify(signature).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::rsa::Rsa;

    fn key() -> PKey<Private> {
        PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
    }

    #[test]
    fn round_trip_and_tamper() {
        let k = key();
        let sig = sign(b"<methodCall/>", &k).unwrap();
        assert_eq!(sig, sign(b"<methodCall/>", &k).unwrap(), "deterministic");
        assert!(verify(b"<methodCall/>", &sig, &k));
        assert!(!verify(b"<methodCall />", &sig, &k));
        assert!(!verify(b"<methodCall/>", &sig, &key()));
        assert!(!verify(b"<methodCall/>", &sig[..10], &k));
    }
}
