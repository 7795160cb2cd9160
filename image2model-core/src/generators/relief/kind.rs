//! The relief generator as the registry sees it: always configured, no
//! variables of its own.

use std::sync::Arc;

use serde_json::Value;

use super::{RELIEF, ReliefConfig, ReliefGenerator};
use crate::generators::registry::{
    BuiltGenerator, GeneratorKind, GeneratorSection, SettingError, Surroundings, Variables,
};
use crate::ports::GenerateError;

/// The relief [`GeneratorKind`]: offline, so offered in every configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReliefKind;

impl GeneratorKind for ReliefKind {
    fn name(&self) -> &'static str {
        RELIEF
    }

    fn variables(&self) -> &'static [&'static str] {
        &[]
    }

    fn configure(
        &self,
        _: &Variables<'_>,
        _: &Surroundings,
    ) -> Result<Option<Arc<dyn GeneratorSection>>, SettingError> {
        Ok(Some(Arc::new(ReliefConfig::default())))
    }

    fn requires(&self) -> &'static str {
        "nothing"
    }
}

impl GeneratorSection for ReliefConfig {
    fn shown(&self) -> Vec<(&'static str, Value)> {
        Vec::new()
    }

    fn build(&self) -> Result<BuiltGenerator, GenerateError> {
        Ok(BuiltGenerator::new(Arc::new(ReliefGenerator::new(
            self.clone(),
        ))))
    }
}
