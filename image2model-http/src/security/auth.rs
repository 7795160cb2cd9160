//! Bearer authentication as poem-openapi security schemes.
//!
//! A handler that takes [`UserKey`] or [`AdminKey`] is protected and is
//! documented as protected. The checker turns the presented key into a
//! [`Principal`] through the [`AuthPolicy`] (constant-time comparison; keys
//! are never logged). A missing, malformed or unknown key is 401 with
//! `WWW-Authenticate: Bearer` (rendered by the error envelope for every 401);
//! a user key on an admin route is 403 `forbidden`.

use image2model_core::ErrorCode;
use std::sync::Arc;

use image2model_core::ports::{AuthPolicy, Principal, Role};
use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;
use secrecy::SecretString;

use crate::error::ApiError;

/// The key store used by the checkers, put into request data by the app.
#[derive(Debug, Clone)]
pub struct Authenticator(pub Arc<dyn AuthPolicy>);

/// The longest key accepted before any lookup.
pub const MAX_KEY_LEN: usize = 256;

/// Whether `token` is an RFC 7235 `token68` (`[A-Za-z0-9-._~+/]+=*`), the
/// only form a bearer credential takes. Keys outside it can never match.
#[must_use]
pub fn is_token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// The caller behind a bearer credential.
///
/// Refused (401) before any lookup: more than one `Authorization` header (a
/// proxy and the origin could disagree on which counts), an empty token, one
/// longer than [`MAX_KEY_LEN`], or one that is not a `token68`. The scheme is
/// matched case-insensitively and one or more spaces may follow it
/// (`credentials = auth-scheme 1*SP token68`); trailing whitespace is
/// removed by the HTTP parser. The lookup itself compares digests in
/// constant time ([`AuthPolicy`]); the presented key is never logged.
async fn principal(req: &Request, bearer: Bearer) -> Result<Principal, ApiError> {
    let token = bearer.token;
    let headers = req
        .headers()
        .get_all(poem::http::header::AUTHORIZATION)
        .iter()
        .count();
    if headers != 1 || token.len() > MAX_KEY_LEN || !is_token68(&token) {
        tracing::warn!("malformed API key");
        return Err(ApiError::unauthorized());
    }
    let Some(auth) = req.data::<Authenticator>() else {
        return Err(ApiError::internal("no authenticator in request data"));
    };
    match auth.0.authenticate(&SecretString::from(token)).await {
        Ok(Some(p)) => {
            crate::request_id::record_key_id(p.key_id.as_str());
            Ok(p)
        }
        Ok(None) => {
            tracing::warn!("unknown API key");
            Err(ApiError::unauthorized())
        }
        Err(e) => {
            tracing::error!(error = %e, "key store unavailable");
            Err(ApiError::of(
                ErrorCode::AuthUnavailable,
                "authentication is unavailable; retry later",
            ))
        }
    }
}

async fn user_checker(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    Ok(principal(req, bearer).await?)
}

async fn admin_checker(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    let p = principal(req, bearer).await?;
    if !p.role.allows(Role::Admin) {
        tracing::warn!(key_id = %p.key_id, "user key on an admin route");
        return Err(ApiError::forbidden().into());
    }
    Ok(p)
}

/// A user (or admin) API key: `Authorization: Bearer <API_KEY>`.
#[derive(Debug, SecurityScheme)]
#[oai(ty = "bearer", checker = "user_checker")]
pub struct UserKey(pub Principal);

/// An admin API key: `Authorization: Bearer <ADMIN_API_KEY>`.
#[derive(Debug, SecurityScheme)]
#[oai(ty = "bearer", checker = "admin_checker")]
pub struct AdminKey(pub Principal);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token68_accepts_key_alphabets_and_refuses_the_rest() {
        for ok in ["0123abcdef", "i2m_AbC-9", "base64+/x==", "a.b~c"] {
            assert!(is_token68(ok), "{ok}");
        }
        for bad in ["", "==", "a b", "a\tb", "ab\n", "ké", "a=b", "a,b", "a\"b"] {
            assert!(!is_token68(bad), "{bad:?}");
        }
    }
}
