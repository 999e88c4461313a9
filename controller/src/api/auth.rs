//! Who a request comes from and what it may do: bearer tokens (kept as SHA-256 digests),
//! client certificates (mutual TLS, see `crate::tls`), the principal they name, and the
//! roles each kind of route needs.

use std::collections::HashMap;
use std::path::Path;

use axum::http::{StatusCode, header};
use meridian_config::controller::{ControllerConfig, Role};
use sha2::{Digest, Sha256};

use super::error::{ApiError, ApiResult};
use crate::Shared;
use crate::error::Error;
use crate::tls::Caller;

/// Who made a request, from its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's name.
    pub name: String,
    /// The token's role.
    pub role: Role,
    /// The vantages it may report as; `None` (an open API, no tokens) for any.
    pub vantages: Option<Vec<String>>,
    /// The names of the client certificate it presented (mutual TLS): it may report only
    /// as one of these too, whatever its token allows.
    pub certificate: Option<Vec<String>>,
}

/// Whether `vantage` is one of `allowed` (a name ending in `*` matches a prefix).
fn names_vantage(allowed: &[String], vantage: &str) -> bool {
    allowed.iter().any(|v| match v.strip_suffix('*') {
        Some(prefix) => vantage.starts_with(prefix),
        None => v == vantage,
    })
}

impl Principal {
    /// Whether it may report probe results as `vantage`: its token and its certificate
    /// (each when there is one) must both name it.
    pub fn may_speak_for(&self, vantage: &str) -> bool {
        self.vantages
            .as_ref()
            .is_none_or(|allowed| names_vantage(allowed, vantage))
            && self
                .certificate
                .as_ref()
                .is_none_or(|allowed| names_vantage(allowed, vantage))
    }

    /// Why it may not report as `vantage`, for the 403.
    pub(crate) fn refusal(&self, vantage: &str) -> String {
        match &self.certificate {
            Some(names) if !names_vantage(names, vantage) => format!(
                "the client certificate of {:?} names {}, not {vantage:?}",
                self.name,
                names.join(", ")
            ),
            _ => format!(
                "token {:?} may report as {}, not as {vantage:?} (controller.tokens[].vantages)",
                self.name,
                self.vantages.as_deref().unwrap_or_default().join(", ")
            ),
        }
    }
}

/// The configured tokens, by the SHA-256 of their secret. Only digests are kept in memory,
/// and tokens are never logged.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Principal>,
}

impl Tokens {
    /// The tokens of a controller section; token files are read relative to `base`.
    pub fn from_config(section: &ControllerConfig, base: &Path) -> Result<Self, Error> {
        let mut by_digest = HashMap::new();
        for (index, token) in section.tokens.iter().enumerate() {
            let digest: [u8; 32] = match (&token.sha256, &token.file) {
                (Some(hex_digest), _) => {
                    let mut out = [0u8; 32];
                    hex::decode_to_slice(hex_digest.to_ascii_lowercase(), &mut out).map_err(
                        |e| Error::Config {
                            file: base.to_path_buf(),
                            path: format!("controller.tokens[{index}].sha256"),
                            message: e.to_string(),
                        },
                    )?;
                    out
                }
                (None, Some(file)) => {
                    let path = base.join(file);
                    let secret =
                        std::fs::read_to_string(&path).map_err(|error| Error::TokenFile {
                            index,
                            path: path.clone(),
                            error,
                        })?;
                    Sha256::digest(secret.trim().as_bytes()).into()
                }
                (None, None) => {
                    return Err(Error::Config {
                        file: base.to_path_buf(),
                        path: format!("controller.tokens[{index}]"),
                        message: "give exactly one of `sha256` and `file`".into(),
                    });
                }
            };
            by_digest.insert(
                digest,
                Principal {
                    name: token.name.clone(),
                    role: token.role,
                    vantages: Some(token.allowed_vantages()),
                    certificate: None,
                },
            );
        }
        Ok(Self { by_digest })
    }

    /// True when no token is configured: every request acts as an anonymous operator.
    pub fn is_open(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Who calls: a bearer token sets the role; a verified client certificate binds the
    /// vantages and, without a token, authenticates as role subscriber.
    fn authenticate(&self, caller: &Caller) -> Result<Principal, ApiError> {
        let certificate = caller.certificate_names();
        let cert_name = certificate
            .as_ref()
            .and_then(|names| names.first().cloned());
        if self.is_open() {
            return Ok(Principal {
                name: cert_name.unwrap_or_else(|| "anonymous".into()),
                role: Role::Operator,
                vantages: None,
                certificate,
            });
        }
        let Some(value) = caller.get(header::AUTHORIZATION) else {
            return match cert_name {
                Some(name) => Ok(Principal {
                    name,
                    role: Role::Subscriber,
                    vantages: None,
                    certificate,
                }),
                None => Err(ApiError::unauthorized(
                    "missing Authorization: Bearer token (or a client certificate)",
                )),
            };
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <token>`"))?;
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        let mut principal = self
            .by_digest
            .get(&digest)
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("unknown token"))?;
        principal.certificate = certificate;
        Ok(principal)
    }
}

pub(crate) const READERS: &[Role] = &[Role::ReadOnly, Role::Operator];
pub(crate) const WATCHERS: &[Role] = &[Role::ReadOnly, Role::Operator, Role::Subscriber];
pub(crate) const VANTAGES: &[Role] = &[Role::Subscriber, Role::Operator];
pub(crate) const OPERATORS: &[Role] = &[Role::Operator];

pub(crate) fn authorize(shared: &Shared, caller: &Caller, roles: &[Role]) -> ApiResult<Principal> {
    let principal = shared.tokens.authenticate(caller)?;
    if !roles.contains(&principal.role) {
        let allowed: Vec<&str> = roles.iter().map(Role::name).collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token {:?} has role {}; this needs one of: {}",
                principal.name,
                principal.role.name(),
                allowed.join(", ")
            ),
        ));
    }
    Ok(principal)
}
