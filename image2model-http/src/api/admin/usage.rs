//! `GET /api/v1/admin/usage`: every key's use today and this month (UTC),
//! with its limits (admin key only).

use std::collections::HashMap;

use chrono::Utc;
use image2model_core::domain::{ApiKeyId, KeyLimits, Periods};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use crate::api::tags::ApiTags;
use crate::api::usage::UsageDto;
use crate::error::AdminError;
use crate::security::auth::AdminKey;
use crate::state::AppState;

/// `GET /api/v1/admin/usage`.
#[derive(Debug, Clone, Object)]
#[oai(rename = "UsageList")]
pub struct UsageListDto {
    /// Every key with use this month, by key id.
    pub keys: Vec<UsageDto>,
}

/// Responses of `GET /api/v1/admin/usage`.
#[derive(Debug, ApiResponse)]
pub enum AdminUsageResponse {
    /// Every key's use.
    #[oai(status = 200)]
    Ok(Json<UsageListDto>),
}

/// The admin usage endpoint.
#[derive(Debug, Clone)]
pub struct AdminUsageApi {
    pub(crate) state: AppState,
}

#[OpenApi(prefix_path = "/admin", tag = "ApiTags::Admin")]
impl AdminUsageApi {
    /// Every key's use
    ///
    /// Items accepted and their estimated cost today and this month (UTC)
    /// for every key that has used any this month, with its limits (the
    /// bootstrap user key's come from `API_KEY_*` variables).
    #[oai(path = "/usage", method = "get", operation_id = "admin_get_usage")]
    async fn usage(&self, _auth: AdminKey) -> Result<AdminUsageResponse, AdminError> {
        let periods = Periods::at(Utc::now());
        let all = self
            .state
            .pipeline
            .job_store()
            .usage_by_owner(periods)
            .await
            .map_err(image2model_core::PipelineError::from)?;
        let mut limits: HashMap<ApiKeyId, KeyLimits> = self
            .state
            .keys
            .list()
            .await
            .map_err(image2model_core::PipelineError::from)?
            .into_iter()
            .map(|k| (k.key_id, k.limits))
            .collect();
        limits.insert(ApiKeyId::bootstrap_user(), self.state.config.api_key_limits);
        let keys = all
            .into_iter()
            .map(|u| {
                let l = limits.get(&u.owner).copied().unwrap_or_default();
                UsageDto::of(&u.owner, periods, u.usage, l)
            })
            .collect();
        Ok(AdminUsageResponse::Ok(Json(UsageListDto { keys })))
    }
}
