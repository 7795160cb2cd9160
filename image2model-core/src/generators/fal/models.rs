//! The FAL models we offer, as a table, and fal's endpoint ids.
//!
//! Adding a model is one entry in [`MODELS`]: our name, fal's endpoint id, the
//! input field that takes the image, the output field that holds the model file,
//! an optional preview field, and a function mapping our options onto the
//! model's inputs.

use std::fmt;

use serde_json::{Map, Value, json};

use crate::domain::{GenerateOptions, ModelName, Texture};

/// A fal endpoint id such as `tripo3d/tripo/v2.5/image-to-3d`.
///
/// Submitting uses the whole id; status, result and cancel use only the
/// namespace (if any), owner and app: `/{owner}/{app}/requests/{id}/…`. Building
/// those URLs with the sub path is a classic bug that fal answers with a 404.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EndpointId {
    full: String,
    namespace: Option<String>,
    owner: String,
    app: String,
    path: Option<String>,
}

/// First segments that are namespaces rather than owners.
const NAMESPACES: [&str; 2] = ["workflows", "comfy"];

/// Why an endpoint id could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fal endpoint id {id:?}: {reason}")]
pub struct EndpointIdError {
    /// The text given.
    pub id: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl EndpointId {
    /// Parses `owner/app[/path…]` or `namespace/owner/app[/path…]` (namespace
    /// `workflows` or `comfy`).
    ///
    /// # Errors
    /// When a segment is empty, `.`/`..`, or has characters outside
    /// `[A-Za-z0-9._-]`, or when owner or app is missing.
    pub fn parse(id: &str) -> Result<Self, EndpointIdError> {
        let err = |reason| EndpointIdError {
            id: id.to_owned(),
            reason,
        };
        let segments: Vec<&str> = id.split('/').collect();
        for s in &segments {
            if s.is_empty() {
                return Err(err("empty segment"));
            }
            if *s == "." || *s == ".." {
                return Err(err("dot segment"));
            }
            if !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return Err(err("segment with characters outside [A-Za-z0-9._-]"));
            }
        }
        let (namespace, rest) = if NAMESPACES.contains(&segments[0]) {
            (Some(segments[0].to_owned()), &segments[1..])
        } else {
            (None, &segments[..])
        };
        if rest.len() < 2 {
            return Err(err("needs at least owner/app"));
        }
        Ok(Self {
            full: id.to_owned(),
            namespace,
            owner: rest[0].to_owned(),
            app: rest[1].to_owned(),
            path: (rest.len() > 2).then(|| rest[2..].join("/")),
        })
    }

    /// The whole id, used to submit.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The namespace (`workflows`, `comfy`), when there is one.
    #[must_use]
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The owner, e.g. `tripo3d`.
    #[must_use]
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The app, e.g. `tripo`.
    #[must_use]
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The sub path after owner/app, e.g. `v2.5/image-to-3d`.
    #[must_use]
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// The prefix of the request URLs: `[namespace/]owner/app`, no sub path.
    #[must_use]
    pub fn requests_prefix(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}/{}", self.owner, self.app),
            None => format!("{}/{}", self.owner, self.app),
        }
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EndpointId({})", self.full)
    }
}

/// One model offered through fal.
#[derive(Debug, Clone, Copy)]
pub struct FalModel {
    /// Our name for it (what clients pass as `model`).
    pub name: &'static str,
    /// fal's endpoint id.
    pub endpoint_id: &'static str,
    /// One line for humans.
    pub description: &'static str,
    /// The input field that takes the image URL.
    pub image_field: &'static str,
    /// The output field holding the model file object (`{url, …}`).
    pub output_field: &'static str,
    /// The output field holding a preview image, when the model returns one.
    pub preview_field: Option<&'static str>,
    /// Adds the model's inputs for our options (besides the image).
    pub map_options: fn(&GenerateOptions, &mut Map<String, Value>),
}

impl FalModel {
    /// The endpoint id, parsed.
    ///
    /// # Panics
    /// Never for the entries of [`MODELS`] (a unit test parses them all).
    #[must_use]
    pub fn endpoint(&self) -> EndpointId {
        EndpointId::parse(self.endpoint_id).expect("the model table holds valid endpoint ids")
    }

    /// The JSON input for an image URL (a data URI or a fal storage URL).
    #[must_use]
    pub fn input(&self, image_url: &str, options: &GenerateOptions) -> Value {
        let mut input = Map::new();
        input.insert(self.image_field.to_owned(), json!(image_url));
        (self.map_options)(options, &mut input);
        Value::Object(input)
    }

    /// Our name as a [`ModelName`].
    ///
    /// # Panics
    /// Never for the entries of [`MODELS`] (a unit test parses them all).
    #[must_use]
    pub fn model_name(&self) -> ModelName {
        ModelName::parse(self.name).expect("the model table holds valid model names")
    }
}

/// The model used when none is configured.
pub const DEFAULT_MODEL: &str = "tripo3d-v2.5";

/// Every model we offer through fal.
pub const MODELS: &[FalModel] = &[
    FalModel {
        name: "tripo3d-v2.5",
        endpoint_id: "tripo3d/tripo/v2.5/image-to-3d",
        description: "Tripo v2.5 image to 3D (textured, optional face limit, preview render)",
        image_field: "image_url",
        output_field: "model_mesh",
        preview_field: Some("rendered_image"),
        map_options: tripo_options,
    },
    FalModel {
        name: "trellis",
        endpoint_id: "fal-ai/trellis",
        description: "TRELLIS image to 3D (texture size from the texture option)",
        image_field: "image_url",
        output_field: "model_mesh",
        preview_field: None,
        map_options: trellis_options,
    },
    FalModel {
        name: "hunyuan3d-v2",
        endpoint_id: "fal-ai/hunyuan3d/v2",
        description: "Hunyuan3D 2.0 image to 3D",
        image_field: "input_image_url",
        output_field: "model_mesh",
        preview_field: None,
        map_options: hunyuan_v2_options,
    },
    FalModel {
        name: "hunyuan3d-v2-mini",
        endpoint_id: "fal-ai/hunyuan3d/v2/mini",
        description: "Hunyuan3D 2.0 mini: smaller and faster",
        image_field: "input_image_url",
        output_field: "model_mesh",
        preview_field: None,
        map_options: hunyuan_v2_options,
    },
    FalModel {
        name: "hunyuan3d-v2-turbo",
        endpoint_id: "fal-ai/hunyuan3d/v2/turbo",
        description: "Hunyuan3D 2.0 turbo: fewer inference steps",
        image_field: "input_image_url",
        output_field: "model_mesh",
        preview_field: None,
        map_options: hunyuan_v2_options,
    },
    FalModel {
        name: "hunyuan3d-v3",
        endpoint_id: "fal-ai/hunyuan3d-v3/image-to-3d",
        description: "Hunyuan3D 3.0 image to 3D (face count, PBR for HD texture, thumbnail)",
        image_field: "input_image_url",
        output_field: "model_glb",
        preview_field: Some("thumbnail"),
        map_options: hunyuan_v3_options,
    },
    FalModel {
        name: "triposr",
        endpoint_id: "fal-ai/triposr",
        description: "TripoSR fast single-image reconstruction (GLB output)",
        image_field: "image_url",
        output_field: "model_mesh",
        preview_field: None,
        map_options: triposr_options,
    },
];

/// Estimated prices per item in US dollars, from fal's public model pages
/// (late 2026): what a per-key spend limit counts. fal bills by its own
/// rules (add-ons such as PBR or higher resolutions cost more); override
/// these with `MODEL_PRICES_USD` when your bill says otherwise.
pub const DEFAULT_PRICES_USD: &[(&str, &str)] = &[
    ("tripo3d-v2.5", "0.30"),
    ("trellis", "0.02"),
    ("hunyuan3d-v2", "0.16"),
    ("hunyuan3d-v2-mini", "0.16"),
    ("hunyuan3d-v2-turbo", "0.16"),
    ("hunyuan3d-v3", "0.375"),
    ("triposr", "0.07"),
];

/// [`DEFAULT_PRICES_USD`] as a price table (models not in it, such as the
/// offline relief generator, cost nothing).
///
/// # Panics
/// Never: a unit test parses every entry.
#[must_use]
pub fn default_prices() -> crate::domain::PriceTable {
    let mut table = crate::domain::PriceTable::new();
    for (model, usd) in DEFAULT_PRICES_USD {
        let price = crate::domain::MicroUsd::parse_usd(usd).expect("the default prices parse");
        table.set(model, price);
    }
    table
}

/// The model with our name `name`.
#[must_use]
pub fn find_model(name: &str) -> Option<&'static FalModel> {
    MODELS.iter().find(|m| m.name == name)
}

/// Tripo v2.5: `texture` no/standard/HD, the original's alignment and
/// orientation, `face_limit` when set. Never `quad` (it forces FBX output).
fn tripo_options(options: &GenerateOptions, input: &mut Map<String, Value>) {
    let texture = match options.texture {
        Texture::No => "no",
        Texture::Standard => "standard",
        Texture::Hd => "HD",
    };
    input.insert("texture".into(), json!(texture));
    input.insert("texture_alignment".into(), json!("original_image"));
    input.insert("orientation".into(), json!("default"));
    if let Some(limit) = options.face_limit {
        input.insert("face_limit".into(), json!(limit.get()));
    }
}

/// TRELLIS always textures; our texture option picks the texture size. It has
/// no face limit.
fn trellis_options(options: &GenerateOptions, input: &mut Map<String, Value>) {
    let size = match options.texture {
        Texture::No => 512,
        Texture::Standard => 1024,
        Texture::Hd => 2048,
    };
    input.insert("texture_size".into(), json!(size));
}

/// Hunyuan3D 2: `textured_mesh` unless the texture option is `no`. No face
/// limit.
fn hunyuan_v2_options(options: &GenerateOptions, input: &mut Map<String, Value>) {
    input.insert(
        "textured_mesh".into(),
        json!(options.texture != Texture::No),
    );
}

/// Hunyuan3D 3: `face_count` from the face limit, PBR for HD texture,
/// `generate_type` `Geometry` when untextured.
fn hunyuan_v3_options(options: &GenerateOptions, input: &mut Map<String, Value>) {
    if let Some(limit) = options.face_limit {
        input.insert("face_count".into(), json!(limit.get()));
    }
    input.insert("enable_pbr".into(), json!(options.texture == Texture::Hd));
    let generate_type = if options.texture == Texture::No {
        "Geometry"
    } else {
        "Normal"
    };
    input.insert("generate_type".into(), json!(generate_type));
}

/// TripoSR: always GLB (its default may be OBJ).
fn triposr_options(_options: &GenerateOptions, input: &mut Map<String, Value>) {
    input.insert("output_format".into(), json!("glb"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FaceLimit;

    fn opts(texture: Texture, faces: Option<u32>) -> GenerateOptions {
        GenerateOptions {
            model: ModelName::parse("x").unwrap(),
            face_limit: faces.map(|f| FaceLimit::new(f).unwrap()),
            texture,
        }
    }

    #[test]
    fn endpoint_id_with_sub_path_uses_owner_and_app_for_requests() {
        let id = EndpointId::parse("tripo3d/tripo/v2.5/image-to-3d").unwrap();
        assert_eq!(id.as_str(), "tripo3d/tripo/v2.5/image-to-3d");
        assert_eq!(id.owner(), "tripo3d");
        assert_eq!(id.app(), "tripo");
        assert_eq!(id.path(), Some("v2.5/image-to-3d"));
        assert_eq!(id.namespace(), None);
        assert_eq!(id.requests_prefix(), "tripo3d/tripo");
    }

    #[test]
    fn endpoint_id_without_sub_path() {
        let id = EndpointId::parse("fal-ai/trellis").unwrap();
        assert_eq!(id.requests_prefix(), "fal-ai/trellis");
        assert_eq!(id.path(), None);
    }

    #[test]
    fn workflows_and_comfy_are_namespaces() {
        let id = EndpointId::parse("workflows/acme/my-flow/v1").unwrap();
        assert_eq!(id.namespace(), Some("workflows"));
        assert_eq!(id.owner(), "acme");
        assert_eq!(id.app(), "my-flow");
        assert_eq!(id.path(), Some("v1"));
        assert_eq!(id.requests_prefix(), "workflows/acme/my-flow");
        let id = EndpointId::parse("comfy/acme/flow").unwrap();
        assert_eq!(id.requests_prefix(), "comfy/acme/flow");
    }

    #[test]
    fn bad_endpoint_ids_are_rejected() {
        for bad in [
            "",
            "tripo3d",
            "workflows/acme",
            "a//b",
            "a/../b",
            "a/b c",
            "/a/b",
            "a/b/",
        ] {
            assert!(
                EndpointId::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn every_table_entry_is_valid_and_unique() {
        for m in MODELS {
            let _ = m.endpoint();
            let _ = m.model_name();
            assert_eq!(MODELS.iter().filter(|o| o.name == m.name).count(), 1);
        }
        assert!(find_model(DEFAULT_MODEL).is_some());
    }

    #[test]
    fn tripo_input_matches_the_original_and_never_sends_quad() {
        let m = find_model("tripo3d-v2.5").unwrap();
        let input = m.input(
            "data:image/png;base64,AA==",
            &opts(Texture::Hd, Some(20_000)),
        );
        assert_eq!(
            input,
            json!({
                "image_url": "data:image/png;base64,AA==",
                "texture": "HD",
                "texture_alignment": "original_image",
                "orientation": "default",
                "face_limit": 20000
            })
        );
        let input = m.input("u", &opts(Texture::No, None));
        assert_eq!(input["texture"], "no");
        assert!(input.get("face_limit").is_none());
        assert!(input.get("quad").is_none());
    }

    #[test]
    fn hunyuan_v3_uses_input_image_url_and_face_count() {
        let m = find_model("hunyuan3d-v3").unwrap();
        let input = m.input("u", &opts(Texture::Standard, Some(5000)));
        assert_eq!(input["input_image_url"], "u");
        assert_eq!(input["face_count"], 5000);
        assert!(input.get("image_url").is_none());
        assert_eq!(m.output_field, "model_glb");
    }

    #[test]
    fn triposr_asks_for_glb() {
        let m = find_model("triposr").unwrap();
        assert_eq!(
            m.input("u", &opts(Texture::No, None))["output_format"],
            "glb"
        );
    }

    #[test]
    fn every_model_has_a_default_price_and_it_parses() {
        let prices = default_prices();
        for model in MODELS {
            assert!(
                prices.price(&model.model_name()).0 > 0,
                "{} has no default price",
                model.name
            );
        }
    }
}
