//! The Assertion Consumer Service (POST /auth/saml/acs, HTTP-POST binding). Phases, each
//! refusing with a reason that goes to the log and the metrics:
//!
//! 1. form: `SAMLResponse` (base64) and `RelayState` from the bounded body prefix;
//! 2. shape: one Response, one Assertion, no duplicate IDs, no DTD (`response_shape`);
//! 3. provider: the pending AuthnRequest the Response names (InResponseTo), else the provider
//!    whose IdP issued it, if that provider takes unsolicited responses;
//! 4. verify (samael, off the async threads): the signature by the IdP's metadata key with
//!    the allowed algorithms, then only the verified element is read: Destination, Issuer,
//!    status, InResponseTo, Recipient, NotBefore/NotOnOrAfter with the skew, decryption;
//! 5. our own rules on that verified assertion: an AudienceRestriction naming us is required
//!    (samael skips the check when there is none), encryption when required;
//! 6. replay: the assertion ID is accepted once;
//! 7. the pending request is consumed, so it cannot be answered twice;
//! 8. the identity (user attribute, attributes, logout subject).

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::Utc;
use samael::schema::Assertion;
use samael::service_provider::Error as SpError;

use super::attributes::{self, SamlIdentity};
use super::pending;
use super::provider::SamlProvider;
use super::replay;
use super::response_shape;
use crate::sso::identity::LoginStart;
use crate::store::Store;

/// A login the ACS accepted.
#[derive(Debug)]
pub(crate) struct AcsLogin {
    pub provider: Arc<SamlProvider>,
    pub identity: SamlIdentity,
    /// What the login page started, from the pending request; None for an unsolicited
    /// response.
    pub start: Option<LoginStart>,
    /// The RelayState of an unsolicited response: a return URL candidate, still to be checked.
    pub relay_state: Option<String>,
    /// The AuthnRequest answered (None for an unsolicited response): its binding cookie goes.
    pub request_id: Option<String>,
}

/// Why a response was refused: `reason` is a fixed metrics label, `detail` is for the log
/// (never the assertion itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub reason: &'static str,
    pub detail: String,
    /// The provider, once known.
    pub provider: Option<String>,
}

fn refuse(reason: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        detail: detail.into(),
        provider: None,
    }
}

/// The form fields of the POST.
fn read_form(body: &[u8]) -> Result<(String, Option<String>), Refusal> {
    let mut response = None;
    let mut relay = None;
    for (name, value) in url::form_urlencoded::parse(body) {
        let slot = match name.as_ref() {
            "SAMLResponse" => &mut response,
            "RelayState" => &mut relay,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(refuse("malformed", format!("{name} appears twice")));
        }
    }
    let response = response.ok_or_else(|| refuse("malformed", "no SAMLResponse field"))?;
    let compact: String = response
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let xml = STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| refuse("malformed", "SAMLResponse is not base64"))?;
    let xml =
        String::from_utf8(xml).map_err(|_| refuse("malformed", "SAMLResponse is not UTF-8"))?;
    Ok((xml, relay.filter(|r| !r.is_empty())))
}

/// Runs the phases over a POSTed body.
///
/// `binding` gives the browser's binding cookie for a request ID: a Response that answers a
/// request is accepted only from the browser that started it (login CSRF).
pub(crate) async fn consume(
    providers: &[Arc<SamlProvider>],
    store: &Store,
    body: &[u8],
    binding: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<AcsLogin, Refusal> {
    let (xml, relay) = read_form(body)?;
    let hints = response_shape::check(&xml).map_err(|e| refuse("shape", e))?;

    // 3. provider
    let pending_login = match &hints.in_response_to {
        Some(id) => pending::find_login(store, id)
            .await
            .map_err(|e| refuse("store", e.to_string()))?,
        None => None,
    };
    let provider = match &pending_login {
        Some(p) => providers.iter().find(|x| x.id == p.start.provider),
        None => providers.iter().find(|x| {
            x.idp()
                .is_some_and(|idp| Some(&idp.entity_id) == hints.issuer.as_ref())
        }),
    }
    .cloned()
    .ok_or_else(|| match &hints.in_response_to {
        Some(_) => refuse(
            "unknown_request",
            "InResponseTo names no request this proxy has outstanding",
        ),
        None => refuse(
            "unknown_issuer",
            format!("no provider has IdP {:?}", hints.issuer),
        ),
    })?;
    let with_provider = |mut r: Refusal| {
        r.provider = Some(provider.id.clone());
        r
    };
    // The request was sent for this browser: someone else's Response (an attacker's own login,
    // posted from the victim's browser) does not log this browser in.
    if let (Some(id), Some(p)) = (&hints.in_response_to, &pending_login) {
        let ok = binding(id).is_some_and(|v| crate::sso::flow_state::hash(&v) == p.binding);
        if !ok {
            return Err(with_provider(refuse(
                "unbound",
                "the request this response answers was not started in this browser",
            )));
        }
    }
    let unsolicited = hints.in_response_to.is_none();
    if unsolicited && !provider.opts.allow_idp_initiated {
        return Err(with_provider(refuse(
            "unsolicited",
            "the response answers no request and this provider does not allow IdP-initiated login",
        )));
    }
    if let Some(dest) = &hints.destination {
        if dest != &provider.sp.acs_url {
            return Err(with_provider(refuse(
                "destination",
                format!("Destination {dest:?} is not this ACS"),
            )));
        }
    }
    let idp = provider
        .idp()
        .ok_or_else(|| with_provider(refuse("no_metadata", "the IdP metadata is not read yet")))?;

    // 4. verify
    let sp = provider.service_provider(&idp, unsolicited);
    let request_id = hints.in_response_to.clone();
    let assertion = tokio::task::spawn_blocking(move || {
        let ids: Vec<&str> = request_id.iter().map(String::as_str).collect();
        sp.parse_xml_response(&xml, Some(&ids)).map_err(classify)
    })
    .await
    .map_err(|_| refuse("invalid", "the response could not be processed"))?
    .map_err(with_provider)?;

    // 5. our rules on the verified assertion
    check_audience(&assertion, &provider.sp.entity_id).map_err(with_provider)?;
    if provider.opts.require_encrypted_assertions && !hints.encrypted {
        return Err(with_provider(refuse(
            "not_encrypted",
            "the assertion was not encrypted",
        )));
    }

    // 6. replay
    let keep = keep_for(&assertion, provider.opts.max_clock_skew.get());
    let first = replay::first_use(store, "assertion", &idp.entity_id, &assertion.id, keep)
        .await
        .map_err(|e| with_provider(refuse("store", e.to_string())))?;
    if !first {
        return Err(with_provider(refuse(
            "replay",
            format!("assertion {:?} was already used", assertion.id),
        )));
    }

    // 7. consume the request
    let (start, relay_state) = match (&hints.in_response_to, pending_login) {
        (Some(id), Some(pending)) => {
            pending::forget_login(store, id)
                .await
                .map_err(|e| with_provider(refuse("store", e.to_string())))?;
            (Some(pending.start), None)
        }
        (Some(_), None) => {
            return Err(with_provider(refuse(
                "unknown_request",
                "InResponseTo names no request this proxy has outstanding",
            )))
        }
        (None, _) => (None, relay),
    };

    // 8. identity
    let identity = attributes::identity(&assertion, &provider.user_attribute)
        .map_err(|e| with_provider(refuse("attribute", e)))?;
    Ok(AcsLogin {
        provider,
        identity,
        start,
        relay_state,
        request_id: hints.in_response_to.clone(),
    })
}

/// samael accepts an assertion without AudienceRestriction; an assertion for anyone is not
/// one for us.
fn check_audience(assertion: &Assertion, entity_id: &str) -> Result<(), Refusal> {
    let restrictions = assertion
        .conditions
        .as_ref()
        .and_then(|c| c.audience_restrictions.as_ref())
        .filter(|r| !r.is_empty())
        .ok_or_else(|| refuse("audience", "the assertion has no AudienceRestriction"))?;
    // Every restriction must name us (SAML core 2.5.1.4: each one must be met).
    if restrictions
        .iter()
        .all(|r| r.audience.iter().any(|a| a == entity_id))
    {
        Ok(())
    } else {
        Err(refuse(
            "audience",
            format!("the audience is not {entity_id:?}"),
        ))
    }
}

/// How long the assertion ID must be remembered: until the assertion's last validity end,
/// plus the skew.
fn keep_for(assertion: &Assertion, skew: Duration) -> Duration {
    let ends = assertion
        .conditions
        .iter()
        .filter_map(|c| c.not_on_or_after)
        .chain(
            assertion
                .subject
                .iter()
                .flat_map(|s| s.subject_confirmations.iter().flatten())
                .filter_map(|c| c.subject_confirmation_data.as_ref())
                .filter_map(|d| d.not_on_or_after),
        )
        .max();
    let left = ends
        .map(|end| (end - Utc::now()).to_std().unwrap_or_default())
        .unwrap_or(Duration::from_secs(3600));
    left + skew
}

/// samael's error as a reason label and a log line.
fn classify(e: SpError) -> Refusal {
    let reason = match &e {
        SpError::FailedToValidateSignature => "signature",
        SpError::DestinationValidationError { .. } => "destination",
        SpError::AssertionExpired { .. }
        | SpError::ResponseExpired { .. }
        | SpError::AssertionConditionExpired { .. }
        | SpError::AssertionConditionExpiredBefore { .. }
        | SpError::AssertionSubjectConfirmationExpired { .. }
        | SpError::AssertionSubjectConfirmationExpiredBefore { .. } => "expired",
        SpError::AssertionConditionAudienceRestrictionFailed { .. } => "audience",
        SpError::AssertionRecipientMismatch { .. } => "recipient",
        SpError::AssertionInResponseToInvalid { .. }
        | SpError::ResponseInResponseToInvalid { .. } => "in_response_to",
        SpError::AssertionIssuerMismatch { .. } | SpError::ResponseIssuerMismatch { .. } => {
            "issuer"
        }
        SpError::ResponseBadStatusCode { .. } => "status",
        SpError::MissingPrivateKeySP
        | SpError::MissingEncryptedKeyInfo
        | SpError::MissingEncryptedValueInfo
        | SpError::EncryptedAssertionKeyMethodUnsupported { .. }
        | SpError::EncryptedAssertionValueMethodUnsupported { .. }
        | SpError::EncryptedAssertionInvalid
        | SpError::FailedToDecryptAssertion => "decrypt",
        SpError::AssertionBearerSubjectConfirmationMissing
        | SpError::AssertionSubjectConfirmationMissing => "subject_confirmation",
        _ => "invalid",
    };
    refuse(reason, e.to_string())
}
