//! Bearer authentication as poem-openapi security schemes.
//!
//! A handler that takes [`UserKey`] or [`AdminKey`] is protected and is
//! documented as protected. The checker turns the presented key into a
//! [`Principal`] through the [`AuthPolicy`] (constant-time comparison; keys
//! are never logged). A missing, malformed or unknown key is 401 with
//! `WWW-Authenticate: Bearer` (rendered by the error envelope for every 401);
//! a user key on an admin route is 403 `forbidden`.

use std::sync::Arc;

use image2model_core::ports::{AuthPolicy, Principal, Role};
use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;
use secrecy::SecretString;

use crate::api::error::ApiError;

/// The key store used by the checkers, put into request data by the app.
#[derive(Debug, Clone)]
pub struct Authenticator(pub Arc<dyn AuthPolicy>);

/// The longest key accepted before any lookup.
const MAX_KEY_LEN: usize = 256;

async fn principal(req: &Request, bearer: Bearer) -> Result<Principal, ApiError> {
    let token = bearer.token;
    if token.is_empty() || token.len() > MAX_KEY_LEN || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::unauthorized());
    }
    let Some(auth) = req.data::<Authenticator>() else {
        return Err(ApiError::internal("no authenticator in request data"));
    };
    match auth.0.authenticate(&SecretString::from(token)).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) => {
            tracing::info!("unknown API key");
            Err(ApiError::unauthorized())
        }
        Err(e) => {
            tracing::error!(error = %e, "key store unavailable");
            Err(ApiError::new(
                poem::http::StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
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
