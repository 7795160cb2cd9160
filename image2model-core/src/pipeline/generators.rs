//! The set of generators a pipeline can use, by model name.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::domain::ModelName;
use crate::ports::{GeneratorHealth, ModelGenerator, ModelInfo};

use super::PipelineError;

/// The generators of a pipeline and the model used when a client names none.
#[derive(Clone)]
pub struct Generators {
    generators: Vec<Arc<dyn ModelGenerator>>,
    by_model: BTreeMap<ModelName, usize>,
    default_model: ModelName,
}

impl fmt::Debug for Generators {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generators")
            .field(
                "generators",
                &self
                    .generators
                    .iter()
                    .map(|g| g.name().to_owned())
                    .collect::<Vec<_>>(),
            )
            .field("default_model", &self.default_model)
            .finish()
    }
}

impl Generators {
    /// The generators, in order of preference; the default model is the first
    /// model of the first generator.
    ///
    /// # Errors
    /// [`PipelineError::Config`] when there is no generator, a generator offers
    /// no model, or two generators offer the same model name.
    pub fn new(generators: Vec<Arc<dyn ModelGenerator>>) -> Result<Self, PipelineError> {
        let mut by_model = BTreeMap::new();
        let mut default_model = None;
        for (idx, g) in generators.iter().enumerate() {
            let models = g.models();
            if models.is_empty() {
                return Err(PipelineError::Config(format!(
                    "generator {} offers no model",
                    g.name()
                )));
            }
            for m in models {
                default_model.get_or_insert_with(|| m.name.clone());
                if by_model.insert(m.name.clone(), idx).is_some() {
                    return Err(PipelineError::Config(format!(
                        "model {} is offered twice",
                        m.name
                    )));
                }
            }
        }
        let default_model =
            default_model.ok_or_else(|| PipelineError::Config("no generator configured".into()))?;
        Ok(Self {
            generators,
            by_model,
            default_model,
        })
    }

    /// Uses `model` when a client names none.
    ///
    /// # Errors
    /// [`PipelineError::UnknownModel`] when no generator offers it.
    pub fn with_default_model(mut self, model: ModelName) -> Result<Self, PipelineError> {
        if !self.by_model.contains_key(&model) {
            return Err(PipelineError::UnknownModel(model));
        }
        self.default_model = model;
        Ok(self)
    }

    /// The generator offering `model`.
    #[must_use]
    pub fn resolve(&self, model: &ModelName) -> Option<&Arc<dyn ModelGenerator>> {
        self.by_model.get(model).map(|&i| &self.generators[i])
    }

    /// Every model offered.
    #[must_use]
    pub fn models(&self) -> Vec<ModelInfo> {
        self.generators.iter().flat_map(|g| g.models()).collect()
    }

    /// The model used when a client names none.
    #[must_use]
    pub fn default_model(&self) -> &ModelName {
        &self.default_model
    }

    /// Each generator with the models it offers, in order.
    pub fn each(&self) -> impl Iterator<Item = (&Arc<dyn ModelGenerator>, Vec<ModelName>)> {
        self.generators.iter().enumerate().map(|(idx, g)| {
            let models = self
                .by_model
                .iter()
                .filter(|&(_, &i)| i == idx)
                .map(|(m, _)| m.clone())
                .collect();
            (g, models)
        })
    }

    /// Each generator's name and health.
    #[must_use]
    pub fn health(&self) -> Vec<(String, GeneratorHealth)> {
        self.generators
            .iter()
            .map(|g| (g.name().to_owned(), g.health()))
            .collect()
    }
}
