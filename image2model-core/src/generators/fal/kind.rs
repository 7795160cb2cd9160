//! The FAL generator as the registry sees it: configured by a FAL key, its
//! section is [`FalConfig`].

use std::sync::Arc;

use secrecy::SecretString;
use serde_json::Value;

use super::{
    DEFAULT_MODEL, DEFAULT_QUEUE_BASE_URL, DEFAULT_STORAGE_BASE_URL, FalConfig, FalConfigError,
    FalGenerator, GENERATOR_NAME,
};
use crate::domain::ModelName;
use crate::generators::registry::{
    BuiltGenerator, GeneratorKind, GeneratorSection, SettingError, Surroundings, Variables,
};
use crate::ports::GenerateError;

/// The FAL [`GeneratorKind`]: offered when a FAL key is set
/// ([`FalConfig::from_lookup`] reads the section), called back at the
/// server's webhook URL for `fal` when the server has a public URL.
#[derive(Debug, Clone, Copy, Default)]
pub struct FalKind;

/// The variable under which the key is shown and checked, whichever of its
/// forms set it.
const KEY_VARIABLE: &str = "FAL_API_KEY";

impl GeneratorKind for FalKind {
    fn name(&self) -> &'static str {
        GENERATOR_NAME
    }

    fn variables(&self) -> &'static [&'static str] {
        &[
            "FAL_API_KEY",
            "FAL_KEY",
            "FAL_KEY_ID",
            "FAL_KEY_SECRET",
            "FAL_QUEUE_BASE_URL",
            "FAL_STORAGE_BASE_URL",
            "DEFAULT_MODEL",
            "FAL_QUEUE_TIMEOUT_SECS",
            "FAL_DATA_URI_MAX_BYTES",
            "FAL_MAX_MODEL_BYTES",
            "FAL_MAX_IN_FLIGHT",
            "FAL_STATUS_STREAM",
            "FAL_STREAM_TICK_MS",
            "FAL_STREAM_PUMP_FROM",
            "FAL_WEBHOOK_SAFETY_SECS",
            "FAL_JWKS_URL",
        ]
    }

    fn configure(
        &self,
        vars: &Variables<'_>,
        around: &Surroundings,
    ) -> Result<Option<Arc<dyn GeneratorSection>>, SettingError> {
        let Some(mut config) = FalConfig::from_lookup(|name| vars.get(name))? else {
            return Ok(None);
        };
        config.webhook_url = around.webhook_url(GENERATOR_NAME);
        Ok(Some(Arc::new(config)))
    }

    fn requires(&self) -> &'static str {
        "FAL_API_KEY (or FAL_KEY)"
    }

    /// No key, fal's hosts and the default model (the tunables only matter
    /// once a key is set).
    fn unconfigured(&self) -> Vec<(&'static str, Value)> {
        vec![
            (KEY_VARIABLE, Value::Null),
            ("FAL_QUEUE_BASE_URL", DEFAULT_QUEUE_BASE_URL.into()),
            ("FAL_STORAGE_BASE_URL", DEFAULT_STORAGE_BASE_URL.into()),
            ("DEFAULT_MODEL", DEFAULT_MODEL.into()),
        ]
    }
}

impl From<FalConfigError> for SettingError {
    fn from(e: FalConfigError) -> Self {
        SettingError {
            variable: e.name,
            message: e.message,
        }
    }
}

impl GeneratorSection for FalConfig {
    fn shown(&self) -> Vec<(&'static str, Value)> {
        vec![
            (KEY_VARIABLE, Value::from("[redacted]")),
            ("FAL_QUEUE_BASE_URL", self.queue_base_url.as_str().into()),
            (
                "FAL_STORAGE_BASE_URL",
                self.storage_base_url.as_str().into(),
            ),
            ("DEFAULT_MODEL", self.default_model.as_str().into()),
            (
                "FAL_QUEUE_TIMEOUT_SECS",
                self.queue_timeout.map_or(0, |t| t.as_secs()).into(),
            ),
            ("FAL_DATA_URI_MAX_BYTES", self.data_uri_max_bytes.into()),
            ("FAL_MAX_MODEL_BYTES", self.max_model_bytes.into()),
            ("FAL_MAX_IN_FLIGHT", self.max_in_flight.into()),
            ("FAL_STATUS_STREAM", self.status_stream.into()),
            (
                "FAL_STREAM_TICK_MS",
                u64::try_from(self.stream_tick.as_millis())
                    .unwrap_or(u64::MAX)
                    .into(),
            ),
            ("FAL_STREAM_PUMP_FROM", self.stream_pump_from.into()),
            (
                "FAL_WEBHOOK_SAFETY_SECS",
                self.webhook_safety.as_secs().into(),
            ),
            ("FAL_JWKS_URL", self.jwks_url.as_str().into()),
        ]
    }

    fn secrets(&self) -> Vec<(&'static str, &SecretString)> {
        vec![(KEY_VARIABLE, &self.credentials)]
    }

    fn default_model(&self) -> Option<ModelName> {
        Some(self.default_model.clone())
    }

    fn build(&self) -> Result<BuiltGenerator, GenerateError> {
        Ok(BuiltGenerator::new(Arc::new(FalGenerator::new(
            self.clone(),
        )?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configure(
        vars: &[(&str, &str)],
        around: &Surroundings,
    ) -> Option<Arc<dyn GeneratorSection>> {
        let lookup = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        };
        FalKind.configure(&Variables::new(&lookup), around).unwrap()
    }

    #[test]
    fn no_key_leaves_fal_unconfigured() {
        assert!(
            configure(
                &[("FAL_QUEUE_BASE_URL", "http://127.0.0.1:1")],
                &Surroundings::default()
            )
            .is_none()
        );
    }

    #[test]
    fn the_webhook_url_comes_from_the_surroundings() {
        let around = Surroundings::with_webhook_base(
            url::Url::parse("https://api.example.com/webhooks/").unwrap(),
        );

        let section = configure(&[("FAL_KEY", "id:secret")], &around).unwrap();

        let any: &dyn std::any::Any = &*section;
        let config = any.downcast_ref::<FalConfig>().unwrap();
        assert_eq!(
            config.webhook_url.as_ref().map(url::Url::as_str),
            Some("https://api.example.com/webhooks/fal")
        );
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let lookup = |name: &str| match name {
            "FAL_KEY" => Some("id:secret".to_owned()),
            "FAL_MAX_IN_FLIGHT" => Some("0".to_owned()),
            _ => None,
        };

        let err = FalKind
            .configure(&Variables::new(&lookup), &Surroundings::default())
            .unwrap_err();

        assert_eq!(err.variable, "FAL_MAX_IN_FLIGHT");
    }
}
