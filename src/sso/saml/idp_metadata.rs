//! IdP metadata: from XML text to what the SP needs of the IdP — its entity ID, the
//! certificates it signs with, and its single sign-on and single logout endpoints for the
//! HTTP-Redirect binding.
//!
//! Phases: (1) when a metadata signing certificate is configured, verify the XML signature
//! and keep only the signed element; (2) parse; (3) pick the entity; (4) refuse metadata that
//! would leave responses unchecked (no signing certificate: samael would then read assertions
//! unverified) or that has expired.

use std::sync::Arc;

use chrono::Utc;
use openssl::pkey::{PKey, Public};
use openssl::x509::X509;
use samael::crypto::{CertificateDer, Crypto, CryptoProvider, ReduceMode};
use samael::metadata::{EntityDescriptor, EntityDescriptorType, HTTP_REDIRECT_BINDING};
use samael::service_provider::ServiceProvider;
use thiserror::Error;

use super::signature_policy;

#[derive(Debug, Error)]
pub(crate) enum MetadataError {
    #[error("the metadata signature does not verify against the configured metadata signing certificate")]
    Signature,
    #[error("the metadata is not SAML metadata: {0}")]
    Parse(String),
    #[error("the metadata has no entity {0:?}")]
    NoSuchEntity(String),
    #[error("the metadata holds {0} entities; set saml.idp_entity_id to pick one")]
    WhichEntity(usize),
    #[error("entity {0:?} has no IDPSSODescriptor")]
    NotAnIdp(String),
    #[error("entity {0:?} has no entityID")]
    NoEntityId(String),
    #[error("entity {0:?} has no signing certificate (KeyDescriptor use=\"signing\"): responses could not be verified")]
    NoSigningCert(String),
    #[error("a certificate in the metadata cannot be read: {0}")]
    BadCert(String),
    #[error("entity {0:?} has no SingleSignOnService for the HTTP-Redirect binding")]
    NoRedirectSso(String),
    #[error("the metadata expired at {0} (validUntil)")]
    Expired(String),
}

/// What this SP knows of its IdP, from one reading of the metadata.
#[derive(Debug)]
pub(crate) struct Idp {
    /// The entity as parsed, kept whole because samael's validation reads it (issuer, certs).
    pub descriptor: EntityDescriptor,
    pub entity_id: String,
    /// The public keys of its signing certificates, for redirect-binding signatures (samael
    /// reads the certificates themselves from `descriptor`).
    pub signing_keys: Vec<PKey<Public>>,
    /// Where AuthnRequests go.
    pub sso_redirect: String,
    /// Where LogoutRequests go, when the IdP does single logout over HTTP-Redirect.
    pub slo_redirect: Option<Endpoint>,
}

/// A single logout endpoint: requests go to `location`, responses to `response_location`.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub location: String,
    pub response_location: String,
}

/// Reads metadata text. `signing_cert` is the configured metadata signing certificate (DER).
pub(crate) fn parse(
    xml: &str,
    signing_cert: Option<&CertificateDer>,
    entity_id: Option<&str>,
) -> Result<Arc<Idp>, MetadataError> {
    let text = match signing_cert {
        Some(cert) => Crypto::reduce_xml_to_signed_with_allowed_algorithms(
            xml,
            std::slice::from_ref(cert),
            ReduceMode::ValidateAndMarkNoAncestors,
            Some(signature_policy::SHA2),
        )
        .map_err(|_| MetadataError::Signature)?,
        None => xml.to_string(),
    };
    let parsed = text.parse::<EntityDescriptorType>().or_else(|_| {
        // A bare EntityDescriptor root parses through its own type.
        text.parse::<EntityDescriptor>()
            .map(EntityDescriptorType::EntityDescriptor)
            .map_err(|e| MetadataError::Parse(e.to_string()))
    })?;
    if let EntityDescriptorType::EntitiesDescriptor(all) = &parsed {
        check_valid_until(all.valid_until)?;
    }
    let entities: Vec<&EntityDescriptor> = parsed.iter().collect();
    let entity = match entity_id {
        Some(id) => entities
            .into_iter()
            .find(|e| e.entity_id.as_deref() == Some(id))
            .ok_or_else(|| MetadataError::NoSuchEntity(id.to_string()))?,
        None if entities.len() == 1 => entities[0],
        None => return Err(MetadataError::WhichEntity(entities.len())),
    };
    idp_from_entity(entity.clone())
}

fn check_valid_until(valid_until: Option<chrono::DateTime<Utc>>) -> Result<(), MetadataError> {
    match valid_until {
        Some(t) if t < Utc::now() => Err(MetadataError::Expired(t.to_rfc3339())),
        _ => Ok(()),
    }
}

fn idp_from_entity(descriptor: EntityDescriptor) -> Result<Arc<Idp>, MetadataError> {
    let name = descriptor.entity_id.clone().unwrap_or_default();
    let entity_id = descriptor
        .entity_id
        .clone()
        .filter(|e| !e.is_empty())
        .ok_or_else(|| MetadataError::NoEntityId(name.clone()))?;
    check_valid_until(descriptor.valid_until)?;
    let idps = descriptor
        .idp_sso_descriptors
        .as_deref()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| MetadataError::NotAnIdp(name.clone()))?;
    // samael's own reading of the signing keys, so that what it verifies with is what we check.
    let probe = ServiceProvider {
        idp_metadata: descriptor.clone(),
        ..ServiceProvider::default()
    };
    let signing_certs = probe
        .idp_signing_certs()
        .map_err(|e| MetadataError::BadCert(e.to_string()))?
        .filter(|c| !c.is_empty())
        .ok_or_else(|| MetadataError::NoSigningCert(name.clone()))?;
    let signing_keys = signing_certs
        .iter()
        .map(|c| {
            X509::from_der(c.der_data())
                .and_then(|x| x.public_key())
                .map_err(|e| MetadataError::BadCert(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sso_redirect = idps
        .iter()
        .flat_map(|d| &d.single_sign_on_services)
        .find(|s| s.binding == HTTP_REDIRECT_BINDING)
        .map(|s| s.location.clone())
        .ok_or_else(|| MetadataError::NoRedirectSso(name.clone()))?;
    let slo_redirect = idps
        .iter()
        .flat_map(|d| &d.single_logout_services)
        .find(|s| s.binding == HTTP_REDIRECT_BINDING)
        .map(|s| Endpoint {
            location: s.location.clone(),
            response_location: s
                .response_location
                .clone()
                .unwrap_or_else(|| s.location.clone()),
        });
    Ok(Arc::new(Idp {
        descriptor,
        entity_id,
        signing_keys,
        sso_redirect,
        slo_redirect,
    }))
}
