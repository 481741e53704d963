//! The header names an upstream connection sent, remembered by position.

use http::header::HeaderName;

use super::{DirectError, MAX_HEADERS};
use crate::proxy::headers;

/// The header names an upstream connection sent, by position: an application answers with the
/// same names in the same order response after response, so a name is looked up here (a
/// byte comparison) before it is parsed (lower-cased and matched against the standard names,
/// about 150 instructions a header, the largest cost of reading a response head).
#[derive(Default)]
pub struct NameCache {
    slots: Vec<Option<CachedName>>,
}

#[derive(Clone)]
struct CachedName {
    raw: Box<[u8]>,
    name: HeaderName,
    /// Always hop-by-hop (`headers::is_hop_by_hop`), worked out once with the name.
    hop_by_hop: bool,
}

impl NameCache {
    /// The header name for the raw `name` found at position `index` of a response head, and
    /// whether it is always hop-by-hop.
    pub(super) fn name(
        &mut self,
        index: usize,
        raw: &[u8],
    ) -> Result<(HeaderName, bool), DirectError> {
        if let Some(Some(seen)) = self.slots.get(index) {
            if *seen.raw == *raw {
                return Ok((seen.name.clone(), seen.hop_by_hop));
            }
        }
        // The order moved (a header more or less than last time): any position will do.
        if let Some(seen) = self.slots.iter().flatten().find(|seen| *seen.raw == *raw) {
            return Ok((seen.name.clone(), seen.hop_by_hop));
        }
        let name =
            HeaderName::from_bytes(raw).map_err(|_| DirectError::Framing("bad header name"))?;
        let hop_by_hop = headers::is_hop_by_hop(&name);
        if index < MAX_HEADERS {
            if self.slots.len() <= index {
                self.slots.resize(index + 1, None);
            }
            self.slots[index] = Some(CachedName {
                raw: raw.into(),
                name: name.clone(),
                hop_by_hop,
            });
        }
        Ok((name, hop_by_hop))
    }
}
