//! XML-RPC values as Moodle's peers write them (lib/phpxmlrpc, or PHP's old xmlrpc
//! extension): `methodCall`, `methodResponse` with params or a fault, and every value type
//! (int/i4/i8, boolean, string, double, dateTime.iso8601, base64, struct, array, nil). Read
//! strictly through `xml` (repeats and strays refused) and written back in the same shapes.

use base64::Engine as _;
use roxmltree::Node;
use thiserror::Error;

use super::xml::{self, XmlError, XmlLimits};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Bool(bool),
    String(String),
    Double(f64),
    /// Kept as written: XML-RPC's ISO 8601 form has no zone and many spellings.
    DateTime(String),
    Base64(Vec<u8>),
    Struct(Vec<(String, Value)>),
    Array(Vec<Value>),
    Nil,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MethodCall {
    pub method: String,
    pub params: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MethodResponse {
    Value(Value),
    Fault { code: i64, string: String },
}

#[derive(Debug, Error, PartialEq)]
pub(crate) enum XmlRpcError {
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("bad <{0}> value")]
    BadValue(&'static str),
    #[error("unknown value type <{0}>")]
    UnknownType(String),
    #[error("a fault must be a struct of faultCode and faultString")]
    BadFault,
}

pub(crate) fn parse_call(text: &str, limits: &XmlLimits) -> Result<MethodCall, XmlRpcError> {
    let doc = xml::parse(text, limits)?;
    let root = xml::root(&doc, "methodCall")?;
    let children = xml::elements(root)?;
    let method = xml::text(xml::only(root, "methodName")?)?
        .trim()
        .to_string();
    let params = match children.iter().filter(|c| c.has_tag_name("params")).count() {
        0 => Vec::new(),
        _ => read_params(xml::only(root, "params")?)?,
    };
    if children
        .iter()
        .any(|c| !c.has_tag_name("methodName") && !c.has_tag_name("params"))
    {
        return Err(XmlError::Content("methodCall".into()).into());
    }
    Ok(MethodCall { method, params })
}

pub(crate) fn parse_response(
    text: &str,
    limits: &XmlLimits,
) -> Result<MethodResponse, XmlRpcError> {
    let doc = xml::parse(text, limits)?;
    let root = xml::root(&doc, "methodResponse")?;
    let children = xml::elements(root)?;
    let [only] = children.as_slice() else {
        return Err(XmlError::Content("methodResponse".into()).into());
    };
    match only.tag_name().name() {
        "params" => {
            let mut params = read_params(*only)?;
            match (params.pop(), params.is_empty()) {
                (Some(v), true) => Ok(MethodResponse::Value(v)),
                _ => Err(XmlError::Content("params".into()).into()),
            }
        }
        "fault" => {
            let Value::Struct(members) = read_value(xml::only(*only, "value")?)? else {
                return Err(XmlRpcError::BadFault);
            };
            let code = members.iter().find(|(k, _)| k == "faultCode");
            let string = members.iter().find(|(k, _)| k == "faultString");
            match (code, string) {
                (Some((_, Value::Int(code))), Some((_, Value::String(string)))) => {
                    Ok(MethodResponse::Fault {
                        code: *code,
                        string: string.clone(),
                    })
                }
                _ => Err(XmlRpcError::BadFault),
            }
        }
        other => Err(XmlError::Content(other.to_string()).into()),
    }
}

fn read_params(params: Node<'_, '_>) -> Result<Vec<Value>, XmlRpcError> {
    let mut out = Vec::new();
    for param in xml::elements(params)? {
        if !param.has_tag_name("param") {
            return Err(XmlError::Content("params".into()).into());
        }
        out.push(read_value(xml::only(param, "value")?)?);
    }
    Ok(out)
}

fn read_value(value: Node<'_, '_>) -> Result<Value, XmlRpcError> {
    if !value.children().any(|c| c.is_element()) {
        // A value without a type element is a string.
        return Ok(Value::String(xml::text(value)?));
    }
    let children = xml::elements(value)?;
    let typed = match children.as_slice() {
        [one] => *one,
        _ => return Err(XmlError::Content("value".into()).into()),
    };
    let name = typed.tag_name().name();
    Ok(match name {
        "int" | "i4" | "i8" => Value::Int(
            xml::text(typed)?
                .trim()
                .parse()
                .map_err(|_| XmlRpcError::BadValue("int"))?,
        ),
        "boolean" => match xml::text(typed)?.trim() {
            "1" => Value::Bool(true),
            "0" => Value::Bool(false),
            _ => return Err(XmlRpcError::BadValue("boolean")),
        },
        "string" => Value::String(xml::text(typed)?),
        "double" => Value::Double(
            xml::text(typed)?
                .trim()
                .parse()
                .map_err(|_| XmlRpcError::BadValue("double"))?,
        ),
        "dateTime.iso8601" => Value::DateTime(xml::text(typed)?.trim().to_string()),
        "base64" => {
            let text: String = xml::text(typed)?
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect();
            Value::Base64(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| XmlRpcError::BadValue("base64"))?,
            )
        }
        "nil" => Value::Nil,
        "array" => {
            let data = xml::only(typed, "data")?;
            if xml::elements(typed)?.len() != 1 {
                return Err(XmlError::Content("array".into()).into());
            }
            let mut items = Vec::new();
            for v in xml::elements(data)? {
                if !v.has_tag_name("value") {
                    return Err(XmlError::Content("data".into()).into());
                }
                items.push(read_value(v)?);
            }
            Value::Array(items)
        }
        "struct" => {
            let mut members = Vec::new();
            for m in xml::elements(typed)? {
                if !m.has_tag_name("member") || xml::elements(m)?.len() != 2 {
                    return Err(XmlError::Content("struct".into()).into());
                }
                let key = xml::text(xml::only(m, "name")?)?;
                members.push((key, read_value(xml::only(m, "value")?)?));
            }
            Value::Struct(members)
        }
        other => return Err(XmlRpcError::UnknownType(other.to_string())),
    })
}

/// Writes a call as phpxmlrpc does (UTF-8 declaration, one param per `<param>`).
pub fn write_call(call: &MethodCall) -> String {
    let mut out =
        String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<methodCall>\n<methodName>");
    out.push_str(&xml::escape(&call.method));
    out.push_str("</methodName>\n<params>\n");
    for p in &call.params {
        out.push_str("<param>\n");
        write_value(&mut out, p);
        out.push_str("\n</param>\n");
    }
    out.push_str("</params>\n</methodCall>\n");
    out
}

pub(crate) fn write_response(resp: &MethodResponse) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<methodResponse>\n");
    match resp {
        MethodResponse::Value(v) => {
            out.push_str("<params>\n<param>\n");
            write_value(&mut out, v);
            out.push_str("\n</param>\n</params>\n");
        }
        MethodResponse::Fault { code, string } => {
            out.push_str("<fault>\n");
            write_value(
                &mut out,
                &Value::Struct(vec![
                    ("faultCode".into(), Value::Int(*code)),
                    ("faultString".into(), Value::String(string.clone())),
                ]),
            );
            out.push_str("\n</fault>\n");
        }
    }
    out.push_str("</methodResponse>\n");
    out
}

fn write_value(out: &mut String, v: &Value) {
    out.push_str("<value>");
    match v {
        Value::Int(i) if i32::try_from(*i).is_ok() => out.push_str(&format!("<int>{i}</int>")),
        Value::Int(i) => out.push_str(&format!("<i8>{i}</i8>")),
        Value::Bool(b) => out.push_str(&format!("<boolean>{}</boolean>", u8::from(*b))),
        Value::String(s) => {
            out.push_str("<string>");
            out.push_str(&xml::escape(s));
            out.push_str("</string>");
        }
        Value::Double(d) => out.push_str(&format!("<double>{d:?}</double>")),
        Value::DateTime(t) => {
            out.push_str("<dateTime.iso8601>");
            out.push_str(&xml::escape(t));
            out.push_str("</dateTime.iso8601>");
        }
        Value::Base64(b) => {
            out.push_str("<base64>");
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(b));
            out.push_str("</base64>");
        }
        Value::Nil => out.push_str("<nil/>"),
        Value::Array(items) => {
            out.push_str("<array>\n<data>\n");
            for item in items {
                write_value(out, item);
                out.push('\n');
            }
            out.push_str("</data>\n</array>");
        }
        Value::Struct(members) => {
            out.push_str("<struct>\n");
            for (k, v) in members {
                out.push_str("<member><name>");
                out.push_str(&xml::escape(k));
                out.push_str("</name>\n");
                write_value(out, v);
                out.push_str("\n</member>\n");
            }
            out.push_str("</struct>");
        }
    }
    out.push_str("</value>");
}

impl std::fmt::Display for Value {
    /// A compact, human-readable rendering for `moodle-edge mnet call`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::Double(d) => write!(f, "{d}"),
            Value::DateTime(t) => write!(f, "{t}"),
            Value::Base64(b) => write!(f, "<{} bytes>", b.len()),
            Value::Nil => write!(f, "nil"),
            Value::Array(items) => {
                write!(f, "[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
            Value::Struct(members) => {
                write!(f, "{{")?;
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{k:?}: {v}")?;
                }
                write!(f, "}}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> XmlLimits {
        XmlLimits::default()
    }

    #[test]
    fn every_type_round_trips() {
        let call = MethodCall {
            method: "auth/mnet/auth.php/user_authorise".into(),
            params: vec![
                Value::Int(7),
                Value::Int(1 << 40),
                Value::Bool(true),
                Value::String("a <b> & 'c' é".into()),
                Value::Double(1.5),
                Value::DateTime("20261201T21:00:00".into()),
                Value::Base64(vec![0, 1, 2, 255]),
                Value::Nil,
                Value::Array(vec![Value::Int(1), Value::String("x".into())]),
                Value::Struct(vec![("k".into(), Value::Array(vec![]))]),
            ],
        };
        assert_eq!(parse_call(&write_call(&call), &limits()).unwrap(), call);
        let fault = MethodResponse::Fault {
            code: 7025,
            string: "-----BEGIN CERTIFICATE-----".into(),
        };
        assert_eq!(
            parse_response(&write_response(&fault), &limits()).unwrap(),
            fault
        );
        let ok = MethodResponse::Value(Value::String("pem".into()));
        assert_eq!(parse_response(&write_response(&ok), &limits()).unwrap(), ok);
    }

    #[test]
    fn untyped_value_is_a_string_and_i4_an_int() {
        let text = "<methodCall><methodName>m</methodName><params><param><value>plain</value></param><param><value><i4>-3</i4></value></param></params></methodCall>";
        let call = parse_call(text, &limits()).unwrap();
        assert_eq!(
            call.params,
            vec![Value::String("plain".into()), Value::Int(-3)]
        );
    }

    #[test]
    fn repeated_method_name_is_refused() {
        let text = "<methodCall><methodName>system/listMethods</methodName><methodName>x</methodName></methodCall>";
        assert!(parse_call(text, &limits()).is_err());
        let text = "<methodCall><methodName>a</methodName><params/><params/></methodCall>";
        assert!(parse_call(text, &limits()).is_err());
        let text = "<methodCall><params/></methodCall>";
        assert!(parse_call(text, &limits()).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        for v in [
            "<int>x</int>",
            "<boolean>2</boolean>",
            "<base64>!!!</base64>",
            "<foo/>",
            "<int>1</int><int>2</int>",
        ] {
            let text = format!(
                "<methodCall><methodName>m</methodName><params><param><value>{v}</value></param></params></methodCall>"
            );
            assert!(parse_call(&text, &limits()).is_err(), "{v}");
        }
    }
}
