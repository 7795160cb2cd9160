//! `GET/POST/DELETE /api/v1/admin/keys[/{key_id}]` and `PUT
//! /api/v1/admin/keys/{key_id}/limits`: API keys and their quotas managed
//! without a restart (admin key only).
//!
//! A created key's secret is in the creation response and nowhere else: the
//! server keeps only its HMAC under `SECRET_KEY` and its first characters
//! (`prefix`, to recognise it in a list). Revocation is checked on every
//! request (no cache), so a revoked key is refused on its very next request.
//! The bootstrap keys (`API_KEY`, `ADMIN_API_KEY`) are listed, without any of
//! their characters, and cannot be revoked here: change the environment.

use chrono::{DateTime, Utc};
use image2model_core::ErrorCode;
use image2model_core::auth::KeyError;
use image2model_core::domain::{ApiKeyId, KeyLimits};
use image2model_core::ports::{Role, StoredKey};
use poem::Request;

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, param::Path};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::api::dto::JsonString;
use crate::api::tags::ApiTags;
use crate::api::usage::LimitsDto;
use crate::audit::{Entry, kind};
use crate::error::{AdminError, ApiError, ErrorBody};
use crate::security::auth::AdminKey;
use crate::state::AppState;

/// A key's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "KeyRole", rename_all = "lowercase")]
pub enum KeyRoleDto {
    /// Upload, and see and manage its own jobs.
    User,
    /// Everything a user may, plus the admin endpoints.
    Admin,
}

impl From<KeyRoleDto> for Role {
    fn from(r: KeyRoleDto) -> Self {
        match r {
            KeyRoleDto::User => Role::User,
            KeyRoleDto::Admin => Role::Admin,
        }
    }
}

impl From<Role> for KeyRoleDto {
    fn from(r: Role) -> Self {
        match r {
            Role::User => KeyRoleDto::User,
            Role::Admin => KeyRoleDto::Admin,
        }
    }
}

/// `POST /api/v1/admin/keys`.
#[derive(Debug, Clone, Object)]
#[oai(rename = "CreateKey")]
pub struct CreateKeyDto {
    /// A name to recognise the key by: 1 to 64 printable characters.
    pub name: JsonString,
    /// Its role.
    pub role: KeyRoleDto,
    /// Its quotas (none when absent or null): an upload that would pass one
    /// is refused with 429 `quota_exceeded`.
    #[oai(default, nullable)]
    pub limits: LimitsDto,
}

/// A key just created, with its secret (shown this once only).
#[derive(Debug, Clone, Object)]
#[oai(rename = "CreatedKey")]
pub struct CreatedKeyDto {
    /// The key's id: its jobs are owned by it; revoke it by it.
    pub key_id: String,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: KeyRoleDto,
    /// The secret's first characters, shown in lists.
    pub prefix: String,
    /// The secret: send it as `Authorization: Bearer <secret>`. It is not
    /// stored and cannot be shown again.
    pub secret: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A key as listed (never its secret).
#[derive(Debug, Clone, Object)]
#[oai(rename = "ApiKey")]
pub struct KeyDto {
    /// The key's id.
    pub key_id: String,
    /// Its name (`API_KEY` or `ADMIN_API_KEY` for the bootstrap keys).
    pub name: String,
    /// Its role.
    pub role: KeyRoleDto,
    /// The secret's first characters; `null` for the bootstrap keys, of
    /// which nothing is shown.
    #[oai(nullable)]
    pub prefix: Option<String>,
    /// Whether it comes from the environment (cannot be revoked here).
    pub bootstrap: bool,
    /// When it was created; `null` for the bootstrap keys.
    #[oai(nullable)]
    pub created_at: Option<DateTime<Utc>>,
    /// When it last authenticated (recorded at most once a minute); `null`
    /// when never, and always for the bootstrap keys.
    #[oai(nullable)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked; `null` while it is live.
    #[oai(nullable)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Its quotas.
    pub limits: LimitsDto,
}

impl From<StoredKey> for KeyDto {
    fn from(k: StoredKey) -> Self {
        Self {
            key_id: k.key_id.to_string(),
            name: k.name,
            role: k.role.into(),
            prefix: Some(k.prefix),
            bootstrap: false,
            created_at: Some(k.created_at),
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
            limits: k.limits.into(),
        }
    }
}

/// `GET /api/v1/admin/keys`.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ApiKeyList")]
pub struct KeyListDto {
    /// The configured bootstrap keys first, then created keys (revoked ones
    /// too), oldest first.
    pub keys: Vec<KeyDto>,
}

/// Responses of `GET /api/v1/admin/keys`.
#[derive(Debug, ApiResponse)]
pub enum ListKeysResponse {
    /// Every key.
    #[oai(status = 200)]
    Ok(Json<KeyListDto>),
}

/// Responses of `POST /api/v1/admin/keys`.
#[derive(Debug, ApiResponse)]
pub enum CreateKeyResponse {
    /// The key, with its secret (shown this once only).
    #[oai(status = 201)]
    Created(Json<CreatedKeyDto>),
    /// `invalid_key_name`, or `invalid_request` (a body that does not parse,
    /// an unknown role).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
}

/// Responses of `PUT /api/v1/admin/keys/{key_id}/limits`.
#[derive(Debug, ApiResponse)]
pub enum SetLimitsResponse {
    /// The key's limits now.
    #[oai(status = 200)]
    Ok(Json<LimitsDto>),
    /// `invalid_request`: a spend that is not a dollar amount.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `not_found`: no key has this id.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// `bootstrap_key`: the bootstrap keys' limits come from the environment.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
}

/// Responses of `DELETE /api/v1/admin/keys/{key_id}`.
#[derive(Debug, ApiResponse)]
pub enum RevokeKeyResponse {
    /// Revoked (or already revoked): the key is refused from its next request.
    #[oai(status = 204)]
    Revoked,
    /// `not_found`: no key has this id.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// `bootstrap_key`: `API_KEY` and `ADMIN_API_KEY` are changed in the
    /// environment, not revoked here.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
}

/// The configured bootstrap keys, as listed.
fn bootstrap_keys(state: &AppState) -> Vec<KeyDto> {
    let config = &state.config;
    let configured = |k: &Option<secrecy::SecretString>| {
        k.as_ref().is_some_and(|s| !s.expose_secret().is_empty())
    };
    let mut keys = Vec::new();
    for (set, id, name, role, limits) in [
        (
            configured(&config.api_key),
            ApiKeyId::bootstrap_user(),
            "API_KEY",
            KeyRoleDto::User,
            config.api_key_limits,
        ),
        (
            configured(&config.admin_api_key),
            ApiKeyId::bootstrap_admin(),
            "ADMIN_API_KEY",
            KeyRoleDto::Admin,
            KeyLimits::default(),
        ),
    ] {
        if set {
            keys.push(KeyDto {
                key_id: id.to_string(),
                name: name.to_owned(),
                role,
                prefix: None,
                bootstrap: true,
                created_at: None,
                last_used_at: None,
                revoked_at: None,
                limits: limits.into(),
            });
        }
    }
    keys
}

/// The id of a key created here, from a path: `not_found` when it does not
/// parse, `bootstrap_key` (with `refusal`) for a bootstrap key.
fn created_key_id(text: &str, refusal: &'static str) -> Result<ApiKeyId, ApiError> {
    let key_id = ApiKeyId::parse(text).map_err(|_| ApiError::not_found())?;
    if key_id == ApiKeyId::bootstrap_user() || key_id == ApiKeyId::bootstrap_admin() {
        return Err(ApiError::of(ErrorCode::BootstrapKey, refusal));
    }
    Ok(key_id)
}

/// The limits a request gives; `invalid_request` for a spend that is not a
/// dollar amount.
fn limits_of(dto: &LimitsDto) -> Result<KeyLimits, ApiError> {
    dto.to_limits()
        .map_err(|m| ApiError::of(ErrorCode::InvalidRequest, m))
}

/// The key management endpoints.
#[derive(Debug, Clone)]
pub struct KeysApi {
    pub(crate) state: AppState,
}

#[OpenApi(prefix_path = "/admin", tag = "ApiTags::Admin")]
impl KeysApi {
    /// List API keys
    ///
    /// The bootstrap keys (marked `bootstrap`, nothing of their secrets
    /// shown) and every created key, revoked ones included, with their last
    /// use. Secrets are never listed.
    #[oai(path = "/keys", method = "get", operation_id = "admin_list_keys")]
    async fn list(&self, _auth: AdminKey) -> Result<ListKeysResponse, AdminError> {
        let stored = self
            .state
            .keys
            .list()
            .await
            .map_err(image2model_core::PipelineError::from)?;
        let mut keys = bootstrap_keys(&self.state);
        keys.extend(stored.into_iter().map(KeyDto::from));
        Ok(ListKeysResponse::Ok(Json(KeyListDto { keys })))
    }

    /// Create an API key
    ///
    /// Makes a new key with a role. The response holds its secret, which is
    /// shown this once only: store it now.
    #[oai(path = "/keys", method = "post", operation_id = "admin_create_key")]
    async fn create(
        &self,
        auth: AdminKey,
        req: &Request,
        body: Json<CreateKeyDto>,
    ) -> Result<CreateKeyResponse, AdminError> {
        let role = Role::from(body.0.role);
        let limits = limits_of(&body.0.limits)?;
        let (key, secret) = match self
            .state
            .keys
            .create_with_limits(&body.0.name.0, role, limits)
            .await
        {
            Ok(made) => made,
            Err(KeyError::InvalidName) => {
                return Err(ApiError::of(
                    ErrorCode::InvalidKeyName,
                    "a key name must be 1 to 64 printable characters",
                )
                .into());
            }
            Err(KeyError::Store(e)) => return Err(image2model_core::PipelineError::from(e).into()),
            Err(e) => return Err(ApiError::internal(e).into()),
        };
        self.state
            .audit(
                Entry::new(kind::KEY_CREATED)
                    .actor(&auth.0.key_id)
                    .client_ip(self.state.clients.client_ip(req))
                    .detail(json!({
                        "key_id": key.key_id.as_str(),
                        "name": key.name,
                        "role": key.role.as_str(),
                        "limits": key.limits,
                    })),
            )
            .await;
        Ok(CreateKeyResponse::Created(Json(CreatedKeyDto {
            key_id: key.key_id.to_string(),
            name: key.name,
            role: key.role.into(),
            prefix: key.prefix,
            secret: secret.expose_secret().to_owned(),
            created_at: key.created_at,
        })))
    }

    /// Revoke an API key
    ///
    /// The key is refused from its next request on; it stays listed with
    /// `revoked_at`. Revoking a revoked key is not an error.
    #[oai(
        path = "/keys/:key_id",
        method = "delete",
        operation_id = "admin_revoke_key"
    )]
    async fn revoke(
        &self,
        auth: AdminKey,
        req: &Request,
        /// The key's id, as listed.
        key_id: Path<String>,
    ) -> Result<RevokeKeyResponse, AdminError> {
        let key_id = created_key_id(
            &key_id.0,
            "bootstrap keys come from API_KEY and ADMIN_API_KEY: change them there",
        )?;
        let found = self
            .state
            .keys
            .revoke(&key_id)
            .await
            .map_err(image2model_core::PipelineError::from)?;
        if !found {
            return Err(ApiError::not_found().into());
        }
        self.state
            .audit(
                Entry::new(kind::KEY_REVOKED)
                    .actor(&auth.0.key_id)
                    .client_ip(self.state.clients.client_ip(req))
                    .detail(json!({ "key_id": key_id.as_str() })),
            )
            .await;
        Ok(RevokeKeyResponse::Revoked)
    }

    /// Change an API key's limits
    ///
    /// Replaces the key's quotas (send `{}` to lift them all); they apply
    /// from its next upload. The bootstrap user key's come from the
    /// `API_KEY_*` variables instead.
    #[oai(
        path = "/keys/:key_id/limits",
        method = "put",
        operation_id = "admin_set_key_limits"
    )]
    async fn set_limits(
        &self,
        auth: AdminKey,
        req: &Request,
        /// The key's id, as listed.
        key_id: Path<String>,
        body: Json<LimitsDto>,
    ) -> Result<SetLimitsResponse, AdminError> {
        let key_id = created_key_id(
            &key_id.0,
            "the bootstrap user key's limits come from API_KEY_ITEMS_PER_DAY, \
             API_KEY_SPEND_PER_DAY_USD and API_KEY_SPEND_PER_MONTH_USD: change them there",
        )?;
        let limits = limits_of(&body.0)?;
        let found = self
            .state
            .keys
            .set_limits(&key_id, limits)
            .await
            .map_err(image2model_core::PipelineError::from)?;
        if !found {
            return Err(ApiError::not_found().into());
        }
        self.state
            .audit(
                Entry::new(kind::KEY_LIMITS_CHANGED)
                    .actor(&auth.0.key_id)
                    .client_ip(self.state.clients.client_ip(req))
                    .detail(json!({ "key_id": key_id.as_str(), "limits": limits })),
            )
            .await;
        Ok(SetLimitsResponse::Ok(Json(limits.into())))
    }
}
