//! Generators built from configuration: an ordered list of generator kinds,
//! each reading its own section of the configuration.
//!
//! A [`GeneratorKind`] knows one kind of generator: its name (what
//! `GENERATOR` selects), the variables of its section, how to read them
//! ([`GeneratorKind::configure`], through a lookup like the environment) and
//! what it needs to be enabled. Reading gives a [`GeneratorSection`]: the
//! checked settings, which show themselves for `config check` (secrets
//! redacted), name their secrets for the production checks, and build the
//! generator.
//!
//! [`GeneratorRegistry::builtin`] is the list in
//! [`KINDS`](super::KINDS), in order of preference. From a configuration it
//! makes [`GeneratorSettings`] (every section read, and which kind is the
//! default), and those build the pipeline's [`Generators`]:
//!
//! - the default kind is the one `GENERATOR` names; without `GENERATOR`, the
//!   first kind in the list whose section is configured (so a FAL key makes
//!   FAL the default, and relief, always configured and last, is the fallback);
//! - every configured kind is offered: the default first, then the others in
//!   list order;
//! - clients that name no model get the default section's
//!   [`GeneratorSection::default_model`], or else the default generator's
//!   first model.
//!
//! ```
//! use image2model_core::generators::registry::{GeneratorRegistry, Surroundings};
//!
//! let registry = GeneratorRegistry::builtin();
//! // No FAL key: relief is the only generator, and the default.
//! let settings = registry
//!     .configure(|_| None, &Surroundings::default())
//!     .expect("nothing to misread");
//! assert_eq!(settings.default_generator(), "relief");
//! let built = settings.build()?;
//! assert_eq!(built.generators().default_model().as_str(), "relief");
//! # Ok::<(), image2model_core::PipelineError>(())
//! ```
//!
//! Adding a generator: `docs/ARCHITECTURE.md`, "How to add a generator".

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use secrecy::SecretString;
use serde_json::Value;
use url::Url;

use crate::domain::ModelName;
use crate::pipeline::{Generators, PipelineError};
use crate::ports::{GenerateError, ModelGenerator};

/// The variable that names the default generator.
pub const GENERATOR_VARIABLE: &str = "GENERATOR";

/// A setting that cannot be used: the variable and what is wrong with it
/// (never the value of a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct SettingError {
    /// The variable.
    pub variable: String,
    /// What is wrong.
    pub message: String,
}

impl SettingError {
    /// An error about `variable`.
    #[must_use]
    pub fn new(variable: &str, message: impl Into<String>) -> Self {
        Self {
            variable: variable.to_owned(),
            message: message.into(),
        }
    }
}

/// The variables a section is read from: a lookup (the server passes the
/// environment) whose values are trimmed, and empty ones count as unset.
pub struct Variables<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl fmt::Debug for Variables<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Variables").finish_non_exhaustive()
    }
}

impl<'a> Variables<'a> {
    /// Variables read through `lookup` (a name → its value, `None` if unset).
    #[must_use]
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { lookup }
    }

    /// The trimmed value of `name`; `None` when it is unset or empty.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }
}

/// What the server tells every section besides its own variables.
#[derive(Debug, Clone, Default)]
pub struct Surroundings {
    /// Ends with `/`; generator `x` is called back at `{webhook_base}x`.
    webhook_base: Option<Url>,
}

impl Surroundings {
    /// Generators that take callbacks are called back under `base` (the
    /// server's public URL and its webhook path): generator `x` at
    /// `{base}/x`.
    #[must_use]
    pub fn with_webhook_base(base: Url) -> Self {
        let mut base = base;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Self {
            webhook_base: Some(base),
        }
    }

    /// Where generator `name` is called back; `None` when the server has no
    /// public URL (then it must learn of completion by itself).
    #[must_use]
    pub fn webhook_url(&self, name: &str) -> Option<Url> {
        // Joining a plain name to an http(s) URL with a host cannot fail.
        self.webhook_base.as_ref()?.join(name).ok()
    }
}

/// One kind of generator: its configuration section and what enables it.
/// Register it by adding it to [`KINDS`](super::KINDS).
pub trait GeneratorKind: fmt::Debug + Send + Sync {
    /// What `GENERATOR` selects it by; also the [`ModelGenerator::name`] of
    /// what it builds. Lower case.
    fn name(&self) -> &'static str;

    /// Every variable its section reads: `config check` shows them and the
    /// server's example configuration must document them.
    fn variables(&self) -> &'static [&'static str];

    /// Reads its section. `Ok(None)`: not configured here (e.g. no key), so
    /// it is not offered.
    ///
    /// # Errors
    /// A [`SettingError`] naming the first variable that cannot be used.
    fn configure(
        &self,
        vars: &Variables<'_>,
        around: &Surroundings,
    ) -> Result<Option<Arc<dyn GeneratorSection>>, SettingError>;

    /// What configures it, for the error when `GENERATOR` names it but it
    /// is not configured: `GENERATOR={name} needs {requires}`.
    fn requires(&self) -> &'static str;

    /// Its variables as `config check` shows them while it is not
    /// configured (defaults, `null` for unset ones); nothing by default.
    fn unconfigured(&self) -> Vec<(&'static str, Value)> {
        Vec::new()
    }
}

/// A kind's configuration section, read and checked; it builds the
/// generator.
pub trait GeneratorSection: fmt::Debug + Send + Sync + Any {
    /// Its variables as `config check` shows them: secrets as
    /// `"[redacted]"`, never their value.
    fn shown(&self) -> Vec<(&'static str, Value)>;

    /// Its secrets by variable, for the production checks (placeholders).
    fn secrets(&self) -> Vec<(&'static str, &SecretString)> {
        Vec::new()
    }

    /// The model clients get when this generator is the default and they
    /// name none; `None`: its first model.
    fn default_model(&self) -> Option<ModelName> {
        None
    }

    /// Builds the generator.
    ///
    /// # Errors
    /// When it cannot be built (e.g. no TLS roots for an HTTP client).
    fn build(&self) -> Result<BuiltGenerator, GenerateError>;
}

/// A built generator: the port the pipeline uses, and the same value as its
/// own type for code that needs more (the server hands fal's webhooks to
/// the `FalGenerator`).
#[derive(Clone)]
pub struct BuiltGenerator {
    generator: Arc<dyn ModelGenerator>,
    concrete: Arc<dyn Any + Send + Sync>,
}

impl fmt::Debug for BuiltGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BuiltGenerator")
            .field(&self.generator)
            .finish()
    }
}

impl BuiltGenerator {
    /// Wraps `generator`.
    #[must_use]
    pub fn new<G: ModelGenerator + 'static>(generator: Arc<G>) -> Self {
        Self {
            generator: generator.clone(),
            concrete: generator,
        }
    }

    /// The generator, as the pipeline sees it.
    #[must_use]
    pub fn generator(&self) -> &Arc<dyn ModelGenerator> {
        &self.generator
    }
}

/// An ordered list of generator kinds.
#[derive(Debug, Clone, Copy)]
pub struct GeneratorRegistry {
    kinds: &'static [&'static dyn GeneratorKind],
}

impl GeneratorRegistry {
    /// A registry of these kinds, in order of preference.
    #[must_use]
    pub const fn new(kinds: &'static [&'static dyn GeneratorKind]) -> Self {
        Self { kinds }
    }

    /// The built-in kinds, [`KINDS`](super::KINDS).
    #[must_use]
    pub const fn builtin() -> Self {
        Self::new(super::KINDS)
    }

    /// The kinds, in order of preference.
    #[must_use]
    pub fn kinds(&self) -> &'static [&'static dyn GeneratorKind] {
        self.kinds
    }

    /// Every variable read: `GENERATOR`, then each kind's, each once.
    #[must_use]
    pub fn variables(&self) -> Vec<&'static str> {
        let mut names = vec![GENERATOR_VARIABLE];
        for kind in self.kinds {
            for name in kind.variables() {
                if !names.contains(name) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// Reads `GENERATOR` and every kind's section through `lookup`.
    ///
    /// # Errors
    /// Every [`SettingError`]: one per kind whose section cannot be used, a
    /// `GENERATOR` that names no kind, no kind configured at all.
    pub fn configure(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
        around: &Surroundings,
    ) -> Result<GeneratorSettings, Vec<SettingError>> {
        let vars = Variables::new(&lookup);
        let mut errors = Vec::new();
        let mut sections = Vec::with_capacity(self.kinds.len());
        for &kind in self.kinds {
            match kind.configure(&vars, around) {
                Ok(section) => sections.push((kind, section)),
                Err(e) => {
                    errors.push(e);
                    sections.push((kind, None));
                }
            }
        }
        let default = match vars.get(GENERATOR_VARIABLE) {
            Some(name) => {
                let name = name.to_ascii_lowercase();
                let found = self.kinds.iter().copied().find(|k| k.name() == name);
                if found.is_none() {
                    let known: Vec<&str> = self.kinds.iter().map(|k| k.name()).collect();
                    errors.push(SettingError::new(
                        GENERATOR_VARIABLE,
                        format!("{name:?} is not one of {}", known.join(", ")),
                    ));
                }
                found
            }
            None => {
                let found = sections
                    .iter()
                    .find(|(_, section)| section.is_some())
                    .map(|&(kind, _)| kind);
                if found.is_none() && errors.is_empty() {
                    errors.push(SettingError::new(
                        GENERATOR_VARIABLE,
                        "no generator is configured",
                    ));
                }
                found
            }
        };
        match default {
            Some(default) if errors.is_empty() => Ok(GeneratorSettings { default, sections }),
            _ => Err(errors),
        }
    }
}

/// The generators' part of a configuration: every kind's section (`None`
/// for the kinds not configured) and the default kind.
#[derive(Debug, Clone)]
pub struct GeneratorSettings {
    default: &'static dyn GeneratorKind,
    sections: Vec<Section>,
}

/// A kind and its section (`None` when it is not configured).
type Section = (
    &'static dyn GeneratorKind,
    Option<Arc<dyn GeneratorSection>>,
);

impl GeneratorSettings {
    /// The name of the default kind (`GENERATOR`, or the preferred
    /// configured one).
    #[must_use]
    pub fn default_generator(&self) -> &'static str {
        self.default.name()
    }

    /// Whether the kind `name` is configured.
    #[must_use]
    pub fn is_configured(&self, name: &str) -> bool {
        self.section_of(name).is_some()
    }

    /// The section of type `T`, when its kind is configured (e.g. the
    /// `FalConfig`).
    #[must_use]
    pub fn section<T: GeneratorSection>(&self) -> Option<&T> {
        self.sections.iter().find_map(|(_, section)| {
            let any: &dyn Any = section.as_deref()?;
            any.downcast_ref::<T>()
        })
    }

    fn section_of(&self, name: &str) -> Option<&Arc<dyn GeneratorSection>> {
        self.sections
            .iter()
            .find(|(kind, _)| kind.name() == name)
            .and_then(|(_, section)| section.as_ref())
    }

    /// Every variable as `config check` shows it: `GENERATOR`, then each
    /// kind's (secrets redacted).
    #[must_use]
    pub fn shown(&self) -> Vec<(&'static str, Value)> {
        let mut shown = vec![(GENERATOR_VARIABLE, Value::from(self.default.name()))];
        for (kind, section) in &self.sections {
            for (name, value) in section
                .as_ref()
                .map_or_else(|| kind.unconfigured(), |s| s.shown())
            {
                if !shown.iter().any(|(n, _)| *n == name) {
                    shown.push((name, value));
                }
            }
        }
        shown
    }

    /// What keeps these settings from building, found without building:
    /// the default kind not configured (`GENERATOR=fal needs FAL_API_KEY (or
    /// FAL_KEY)`).
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        if self.section_of(self.default.name()).is_some() {
            return Vec::new();
        }
        vec![format!(
            "{GENERATOR_VARIABLE}={} needs {}",
            self.default.name(),
            self.default.requires()
        )]
    }

    /// Every configured section's secrets, by variable.
    #[must_use]
    pub fn secrets(&self) -> Vec<(&'static str, &SecretString)> {
        self.sections
            .iter()
            .filter_map(|(_, section)| section.as_ref())
            .flat_map(|section| section.secrets())
            .collect()
    }

    /// Builds every configured generator: the default first, then the others
    /// in the registry's order.
    ///
    /// # Errors
    /// [`PipelineError::Config`] when the default kind is not configured
    /// (`GENERATOR=fal needs FAL_API_KEY (or FAL_KEY)`), a generator cannot
    /// be built, or the generators do not make a valid set (no model, a model
    /// offered twice, a default model no generator offers).
    pub fn build(&self) -> Result<BuiltGenerators, PipelineError> {
        let Some(first) = self.section_of(self.default.name()) else {
            return Err(PipelineError::Config(self.problems().join("; ")));
        };
        let others = self
            .sections
            .iter()
            .filter(|(kind, _)| kind.name() != self.default.name())
            .filter_map(|(kind, section)| Some((*kind, section.as_ref()?)));
        let mut built = Vec::with_capacity(self.sections.len());
        for (kind, section) in std::iter::once((self.default, first)).chain(others) {
            let generator = section.build().map_err(|e| {
                PipelineError::Config(format!(
                    "the {} generator could not be built: {e}",
                    kind.name()
                ))
            })?;
            built.push(generator);
        }
        let generators = Generators::new(built.iter().map(|b| b.generator.clone()).collect())?;
        let generators = match first.default_model() {
            Some(model) => generators.with_default_model(model).map_err(|e| {
                PipelineError::Config(format!("the {} default model: {e}", self.default.name()))
            })?,
            None => generators,
        };
        Ok(BuiltGenerators { generators, built })
    }
}

/// The generators a configuration built.
#[derive(Debug, Clone)]
pub struct BuiltGenerators {
    generators: Generators,
    built: Vec<BuiltGenerator>,
}

impl BuiltGenerators {
    /// The set the pipeline uses.
    #[must_use]
    pub fn generators(&self) -> &Generators {
        &self.generators
    }

    /// The set the pipeline uses, by value.
    #[must_use]
    pub fn into_generators(self) -> Generators {
        self.generators
    }

    /// The generator of type `T`, when one was built (e.g. the
    /// `FalGenerator`, which receives fal's webhooks).
    #[must_use]
    pub fn find<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.built
            .iter()
            .find_map(|b| b.concrete.clone().downcast::<T>().ok())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::generators::fal::FalGenerator;
    use crate::generators::relief::ReliefGenerator;
    use crate::ports::{GenerateContext, GenerateRequest, GeneratedModel, ModelInfo};

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn builtin(vars: &[(&str, &str)]) -> Result<GeneratorSettings, Vec<SettingError>> {
        GeneratorRegistry::builtin().configure(lookup(vars), &Surroundings::default())
    }

    fn names(built: &BuiltGenerators) -> Vec<String> {
        built
            .generators()
            .each()
            .map(|(g, _)| g.name().to_owned())
            .collect()
    }

    /// A generator of a test kind: offers `{name}-model`, generates nothing.
    #[derive(Debug)]
    struct Named(&'static str);

    #[async_trait]
    impl ModelGenerator for Named {
        fn name(&self) -> &str {
            self.0
        }

        fn models(&self) -> Vec<ModelInfo> {
            vec![ModelInfo {
                name: ModelName::parse(&format!("{}-model", self.0)).unwrap(),
                generator: self.0.to_owned(),
                description: String::new(),
            }]
        }

        async fn generate(
            &self,
            _: GenerateRequest,
            _: GenerateContext<'_>,
        ) -> Result<GeneratedModel, GenerateError> {
            Err(GenerateError::Internal(
                "a test kind generates nothing".into(),
            ))
        }
    }

    /// A test kind configured when `{NAME}_ON` is set.
    #[derive(Debug)]
    struct TestKind {
        name: &'static str,
        variable: &'static [&'static str],
    }

    #[derive(Debug)]
    struct TestSection(&'static str);

    impl GeneratorKind for TestKind {
        fn name(&self) -> &'static str {
            self.name
        }

        fn variables(&self) -> &'static [&'static str] {
            self.variable
        }

        fn configure(
            &self,
            vars: &Variables<'_>,
            _: &Surroundings,
        ) -> Result<Option<Arc<dyn GeneratorSection>>, SettingError> {
            match vars.get(self.variable[0]).as_deref() {
                None => Ok(None),
                Some("yes") => Ok(Some(Arc::new(TestSection(self.name)))),
                Some(other) => Err(SettingError::new(
                    self.variable[0],
                    format!("{other:?} is not yes"),
                )),
            }
        }

        fn requires(&self) -> &'static str {
            self.variable[0]
        }
    }

    impl GeneratorSection for TestSection {
        fn shown(&self) -> Vec<(&'static str, Value)> {
            Vec::new()
        }

        fn build(&self) -> Result<BuiltGenerator, GenerateError> {
            Ok(BuiltGenerator::new(Arc::new(Named(self.0))))
        }
    }

    static ALPHA: TestKind = TestKind {
        name: "alpha",
        variable: &["ALPHA_ON"],
    };
    static BETA: TestKind = TestKind {
        name: "beta",
        variable: &["BETA_ON"],
    };
    static TEST_KINDS: [&dyn GeneratorKind; 2] = [&ALPHA, &BETA];

    fn two_kinds(vars: &[(&str, &str)]) -> Result<GeneratorSettings, Vec<SettingError>> {
        GeneratorRegistry::new(&TEST_KINDS).configure(lookup(vars), &Surroundings::default())
    }

    #[test]
    fn without_generator_the_first_configured_kind_is_the_default() {
        let settings = two_kinds(&[("BETA_ON", "yes")]).unwrap();

        let built = settings.build().unwrap();

        assert_eq!(settings.default_generator(), "beta");
        assert_eq!(names(&built), ["beta"]);
        assert_eq!(built.generators().default_model().as_str(), "beta-model");
    }

    #[test]
    fn the_default_comes_first_and_the_others_follow_in_list_order() {
        let settings = two_kinds(&[
            ("ALPHA_ON", "yes"),
            ("BETA_ON", "yes"),
            ("GENERATOR", "Beta"),
        ])
        .unwrap();

        let built = settings.build().unwrap();

        assert_eq!(names(&built), ["beta", "alpha"]);
        assert_eq!(built.generators().default_model().as_str(), "beta-model");
    }

    #[test]
    fn a_default_that_is_not_configured_says_what_it_needs() {
        let settings = two_kinds(&[("ALPHA_ON", "yes"), ("GENERATOR", "beta")]).unwrap();

        let err = settings.build().unwrap_err();

        assert_eq!(settings.problems(), ["GENERATOR=beta needs BETA_ON"]);
        assert_eq!(
            err.to_string(),
            "invalid generator configuration: GENERATOR=beta needs BETA_ON"
        );
    }

    #[test]
    fn every_section_error_and_an_unknown_generator_are_reported() {
        let errors = two_kinds(&[
            ("ALPHA_ON", "maybe"),
            ("BETA_ON", "no"),
            ("GENERATOR", "gamma"),
        ])
        .unwrap_err();

        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();

        assert_eq!(
            text,
            [
                "ALPHA_ON: \"maybe\" is not yes",
                "BETA_ON: \"no\" is not yes",
                "GENERATOR: \"gamma\" is not one of alpha, beta",
            ]
        );
    }

    #[test]
    fn no_configured_kind_is_an_error() {
        let errors = two_kinds(&[]).unwrap_err();

        assert_eq!(
            errors,
            [SettingError::new("GENERATOR", "no generator is configured")]
        );
    }

    #[test]
    fn builtin_without_a_fal_key_offers_relief_alone() {
        let settings = builtin(&[]).unwrap();

        let built = settings.build().unwrap();

        assert_eq!(settings.default_generator(), "relief");
        assert_eq!(names(&built), ["relief"]);
        assert!(built.find::<FalGenerator>().is_none());
        assert!(built.find::<ReliefGenerator>().is_some());
    }

    #[test]
    fn builtin_with_a_fal_key_makes_fal_the_default_before_relief() {
        let settings = builtin(&[("FAL_KEY", "id:secret"), ("DEFAULT_MODEL", "trellis")]).unwrap();

        let built = settings.build().unwrap();

        assert_eq!(settings.default_generator(), "fal");
        assert_eq!(names(&built), ["fal", "relief"]);
        assert_eq!(built.generators().default_model().as_str(), "trellis");
        assert!(built.find::<FalGenerator>().is_some());
    }

    #[test]
    fn builtin_with_generator_relief_keeps_fal_but_second() {
        let settings = builtin(&[("FAL_KEY", "id:secret"), ("GENERATOR", "relief")]).unwrap();

        let built = settings.build().unwrap();

        assert_eq!(names(&built), ["relief", "fal"]);
        assert_eq!(built.generators().default_model().as_str(), "relief");
        assert!(built.find::<FalGenerator>().is_some());
    }

    #[test]
    fn builtin_generator_fal_without_a_key_needs_one() {
        let settings = builtin(&[("GENERATOR", "fal")]).unwrap();

        let err = settings.build().unwrap_err();

        assert!(
            matches!(&err, PipelineError::Config(m) if m == "GENERATOR=fal needs FAL_API_KEY (or FAL_KEY)"),
            "{err}"
        );
    }

    #[test]
    fn each_builtin_kind_builds_generators_named_after_it() {
        let settings = builtin(&[("FAL_KEY", "id:secret")]).unwrap();

        let built = settings.build().unwrap();

        for kind in GeneratorRegistry::builtin().kinds() {
            let (generator, _) = built
                .generators()
                .each()
                .find(|(g, _)| g.name() == kind.name())
                .unwrap_or_else(|| panic!("no {} generator built", kind.name()));
            assert!(
                generator
                    .models()
                    .iter()
                    .all(|m| m.generator == kind.name()),
                "{} lists models of another generator",
                kind.name()
            );
        }
    }

    #[test]
    fn each_builtin_kind_reads_only_the_variables_it_lists() {
        let asked = Mutex::new(Vec::<String>::new());
        let recording = |name: &str| {
            asked.lock().unwrap().push(name.to_owned());
            // A key, so that FAL reads the rest of its section.
            (name == "FAL_API_KEY").then(|| "id:secret".to_owned())
        };
        let registry = GeneratorRegistry::builtin();

        registry
            .configure(recording, &Surroundings::default())
            .unwrap();

        let listed = registry.variables();
        let asked = asked.into_inner().unwrap();
        let unlisted: Vec<&String> = asked
            .iter()
            .filter(|n| !listed.contains(&n.as_str()))
            .collect();
        assert!(unlisted.is_empty(), "read but not listed: {unlisted:?}");
    }

    #[test]
    fn shown_settings_redact_secrets_and_show_unconfigured_defaults() {
        let with_key = builtin(&[("FAL_API_KEY", "id:very-secret")]).unwrap();
        let without = builtin(&[]).unwrap();

        let shown_with: HashMap<_, _> = with_key.shown().into_iter().collect();
        let shown_without: HashMap<_, _> = without.shown().into_iter().collect();

        assert_eq!(shown_with["GENERATOR"], "fal");
        assert_eq!(shown_with["FAL_API_KEY"], "[redacted]");
        assert!(!format!("{:?}", with_key.shown()).contains("very-secret"));
        assert_eq!(shown_without["GENERATOR"], "relief");
        assert_eq!(shown_without["FAL_API_KEY"], Value::Null);
        assert_eq!(shown_without["FAL_QUEUE_BASE_URL"], "https://queue.fal.run");
    }

    #[test]
    fn secrets_name_their_variable() {
        let settings = builtin(&[("FAL_KEY", "id:very-secret")]).unwrap();

        let secrets = settings.secrets();

        assert_eq!(secrets.len(), 1);
        assert_eq!(secrets[0].0, "FAL_API_KEY");
    }

    #[test]
    fn a_webhook_url_is_the_base_and_the_generators_name() {
        let around =
            Surroundings::with_webhook_base(Url::parse("https://api.example.com/hooks").unwrap());

        let url = around.webhook_url("fal").unwrap();

        assert_eq!(url.as_str(), "https://api.example.com/hooks/fal");
        assert!(Surroundings::default().webhook_url("fal").is_none());
    }
}
