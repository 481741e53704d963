//! Sealing: what PHP's `openssl_seal($data, $sealed, $ekeys, [$pub], 'RC4')` and
//! `openssl_open` do. A random 128-bit RC4 key (RC4 has no IV) encrypts the data; the key is
//! wrapped for the recipient with RSA PKCS#1 v1.5. RSA is OpenSSL's (constant-time PKCS#1 v1.5
//! decryption, see docs/mnet.md); RC4 is RustCrypto's `rc4`, so the process needs no OpenSSL
//! legacy provider.

use openssl::pkey::{HasPublic, PKey, PKeyRef, Private};
use openssl::rsa::Padding;
use rc4::consts::U16;
use rc4::{KeyInit, Rc4, StreamCipher};
use thiserror::Error;

/// The RC4 key length openssl_seal uses (EVP_rc4's default).
const RC4_KEY_LEN: usize = 16;

#[derive(Debug, Error)]
pub(crate) enum SealError {
    #[error("cannot seal: {0}")]
    Rsa(#[from] openssl::error::ErrorStack),
    #[error("the recipient key is not RSA")]
    NotRsa,
}

/// The RC4 ciphertext of `data` and the RC4 key wrapped for `recipient`.
pub(crate) fn seal<T: HasPublic>(
    data: &[u8],
    recipient: &PKeyRef<T>,
) -> Result<(Vec<u8>, Vec<u8>), SealError> {
    let mut key = [0u8; RC4_KEY_LEN];
    openssl::rand::rand_bytes(&mut key)?;
    let rsa = recipient.rsa().map_err(|_| SealError::NotRsa)?;
    let mut wrapped = vec![0u8; rsa.size() as usize];
    let n = rsa.public_encrypt(&key, &mut wrapped, Padding::PKCS1)?;
    wrapped.truncate(n);
    let mut sealed = data.to_vec();
    rc4(&key, &mut sealed);
    Ok((sealed, wrapped))
}

/// Opens what `seal` (or openssl_seal) made for `key`; None when the wrapped key does not open
/// with this private key or is not a 128-bit key.
pub(crate) fn open(sealed: &[u8], wrapped: &[u8], key: &PKey<Private>) -> Option<Vec<u8>> {
    let rsa = key.rsa().ok()?;
    let mut out = vec![0u8; rsa.size() as usize];
    let n = rsa
        .private_decrypt(wrapped, &mut out, Padding::PKCS1)
        .ok()?;
    if n != RC4_KEY_LEN {
        return None;
    }
    let mut data = sealed.to_vec();
    rc4(&out[..RC4_KEY_LEN], &mut data);
    Some(data)
}

fn rc4(key: &[u8], data: &mut [u8]) {
    // The length was checked by both callers, so this cannot fail.
    if let Ok(mut cipher) = Rc4::<U16>::new_from_slice(key) {
        cipher.apply_keystream(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::rsa::Rsa;

    #[test]
    fn round_trip_and_wrong_key() {
        let k = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let other = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let (sealed, wrapped) = seal(b"hello world", &k).unwrap();
        assert_ne!(sealed, b"hello world");
        assert_eq!(open(&sealed, &wrapped, &k).unwrap(), b"hello world");
        assert!(open(&sealed, &wrapped, &other).is_none());
        assert!(open(&sealed, &wrapped[..100], &k).is_none());
    }

    #[test]
    fn rc4_known_answer() {
        // RFC 6229, 128-bit key 0x0102...10, keystream offset 0.
        let key: Vec<u8> = (1..=16).collect();
        let mut data = [0u8; 8];
        rc4(&key, &mut data);
        assert_eq!(hex::encode(data), "9ac7cc9a609d1ef7");
    }
}
