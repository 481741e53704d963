//! Bounded XML reading for MNet: one parser (roxmltree) for every layer, with a size limit, a
//! node limit, a nesting-depth limit, DTDs refused (so no entity can be declared, let alone
//! expanded) and element lookups that refuse a repeated or missing child, because Moodle's
//! streaming parser concatenates repeated elements and a differential between its reading and
//! ours would let a message mean one thing here and another in PHP.

use roxmltree::{Document, Node, ParsingOptions};
use thiserror::Error;

/// Limits for one XML document.
#[derive(Debug, Clone, Copy)]
pub struct XmlLimits {
    /// Larger documents are refused before parsing.
    pub max_bytes: usize,
    /// Element nesting deeper than this is refused (the XML-RPC value reader recurses).
    pub max_depth: usize,
    /// Bounds the tree roxmltree builds, whatever the byte count.
    pub max_nodes: u32,
}

impl Default for XmlLimits {
    fn default() -> Self {
        XmlLimits {
            max_bytes: 4 << 20,
            max_depth: 32,
            max_nodes: 200_000,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum XmlError {
    #[error("XML document of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("XML nesting deeper than {0}")]
    TooDeep(usize),
    #[error("XML with a DTD is refused")]
    Dtd,
    #[error("XML is not well formed: {0}")]
    Syntax(String),
    #[error("<{parent}> must hold exactly one <{child}>, found {found}")]
    Count {
        parent: String,
        child: &'static str,
        found: usize,
    },
    #[error("root element is <{found}>, expected <{expected}>")]
    Root {
        found: String,
        expected: &'static str,
    },
    #[error("<{0}> holds unexpected content")]
    Content(String),
}

/// Turns the bytes into text: UTF-8 as is; a document that declares ISO-8859-1 (as Moodle's
/// envelopes do) and is not valid UTF-8 is read as Latin-1, byte for character.
pub(crate) fn decode(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

/// Parses `text` under `limits`.
pub(crate) fn parse<'a>(text: &'a str, limits: &XmlLimits) -> Result<Document<'a>, XmlError> {
    if text.len() > limits.max_bytes {
        return Err(XmlError::TooLarge(text.len()));
    }
    // A quick early refusal; roxmltree refuses a DTD too when told to.
    if memchr::memmem::find(text.as_bytes(), b"<!DOCTYPE").is_some() {
        return Err(XmlError::Dtd);
    }
    let opt = ParsingOptions {
        allow_dtd: false,
        nodes_limit: limits.max_nodes,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(text, opt).map_err(|e| match e {
        roxmltree::Error::DtdDetected => XmlError::Dtd,
        other => XmlError::Syntax(other.to_string()),
    })?;
    // Nodes come in document order, a parent before its children: one pass gives each
    // node its depth from its parent's.
    let mut depths = vec![0usize; doc.descendants().count() + 1];
    for node in doc.descendants() {
        let depth = match node.parent() {
            Some(p) => depths.get(p.id().get_usize()).copied().unwrap_or(0) + 1,
            None => 0,
        };
        if depth > limits.max_depth {
            return Err(XmlError::TooDeep(limits.max_depth));
        }
        if let Some(slot) = depths.get_mut(node.id().get_usize()) {
            *slot = depth;
        }
    }
    Ok(doc)
}

/// The root element, which must be named `name`.
pub(crate) fn root<'a, 'i>(
    doc: &'a Document<'i>,
    name: &'static str,
) -> Result<Node<'a, 'i>, XmlError> {
    let root = doc.root_element();
    if root.tag_name().name() != name {
        return Err(XmlError::Root {
            found: root.tag_name().name().to_string(),
            expected: name,
        });
    }
    Ok(root)
}

/// The element children of `node` (text between them must be whitespace).
pub(crate) fn elements<'a, 'i>(node: Node<'a, 'i>) -> Result<Vec<Node<'a, 'i>>, XmlError> {
    let mut out = Vec::new();
    for child in node.children() {
        if child.is_element() {
            out.push(child);
        } else if child.is_text() && !child.text().unwrap_or_default().trim().is_empty() {
            return Err(XmlError::Content(node.tag_name().name().to_string()));
        }
    }
    Ok(out)
}

/// The one child element named `name` (by local name); a repeated or missing one is an error.
pub(crate) fn only<'a, 'i>(
    node: Node<'a, 'i>,
    name: &'static str,
) -> Result<Node<'a, 'i>, XmlError> {
    let mut found = node
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == name);
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one),
        (first, _) => Err(XmlError::Count {
            parent: node.tag_name().name().to_string(),
            child: name,
            found: if first.is_none() {
                0
            } else {
                2 + found.count()
            },
        }),
    }
}

/// The text of an element that must hold text only (no child elements).
pub(crate) fn text(node: Node<'_, '_>) -> Result<String, XmlError> {
    let mut out = String::new();
    for child in node.children() {
        if child.is_element() {
            return Err(XmlError::Content(node.tag_name().name().to_string()));
        }
        if let Some(t) = child.text() {
            out.push_str(t);
        }
    }
    Ok(out)
}

/// Escapes text for an element's content or an attribute. A CR is written as a character
/// reference: a parser turns a literal one into LF (XML's line-end rule), so the value would
/// not read back the same.
pub(crate) fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['<', '>', '&', '"', '\'', '\r']) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_dtd_and_entity_bombs() {
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]><r>&b;</r>";
        assert_eq!(
            parse(bomb, &XmlLimits::default()).err(),
            Some(XmlError::Dtd)
        );
    }

    #[test]
    fn refuses_deep_nesting_and_size() {
        let deep = format!("{}{}", "<a>".repeat(40), "</a>".repeat(40));
        assert_eq!(
            parse(&deep, &XmlLimits::default()).err(),
            Some(XmlError::TooDeep(32))
        );
        let limits = XmlLimits {
            max_bytes: 10,
            ..XmlLimits::default()
        };
        assert!(matches!(
            parse("<a>0123456789</a>", &limits),
            Err(XmlError::TooLarge(_))
        ));
    }

    #[test]
    fn only_refuses_repeats_and_absence() {
        let doc = parse("<r><a>1</a><a>2</a><b/></r>", &XmlLimits::default()).unwrap();
        let r = doc.root_element();
        assert!(matches!(
            only(r, "a"),
            Err(XmlError::Count { found: 2, .. })
        ));
        assert!(matches!(
            only(r, "c"),
            Err(XmlError::Count { found: 0, .. })
        ));
        assert!(only(r, "b").is_ok());
    }

    #[test]
    fn latin1_fallback() {
        assert_eq!(decode(b"caf\xe9"), "café");
        assert_eq!(decode("café".as_bytes()), "café");
    }
}
