//! What an `adapter_config.json` says beyond the LoRA shape, checked before its weights are
//! used: the base-model architecture it was made for (`auto_mapping.base_model_class`), the
//! settings that change what the weights mean and copra-lab does not implement (DoRA,
//! `fan_in_fan_out`, trained biases, `modules_to_save`, …), and which modules it adapts
//! (`target_modules`, `exclude_modules`, `layers_to_transform`, `layers_pattern`), matched as
//! PEFT matches them. A mismatch is one line naming the key, never a silently different model.

use super::names::{EncoderNames, Spelling};
use super::pattern::Pattern;
use super::peft::PeftLayout;
use anyhow::{anyhow, bail, Result};
use serde_json::Value;
use std::path::Path;

/// The model family an adapter was made for: its architecture's name table.
pub type Family = &'static EncoderNames;

/// The family of a transformers class name (`ViTModel`, `BertForSequenceClassification`, …).
pub fn family_of_class(name: &str) -> Option<Family> {
    crate::model::checkpoint::encoder_names().into_iter().find(|n| n.owns_class(name))
}

/// Settings that change what the weights mean, with the value copra-lab implements and why
/// another is refused.
const FIXED_SETTINGS: &[(&str, &str)] = &[
    ("use_dora", "DoRA (weight-decomposed LoRA) is not implemented"),
    ("fan_in_fan_out", "fan_in_fan_out (transposed Conv1D weights, as in GPT-2) is not implemented"),
    ("lora_bias", "a trained bias on lora_B is not implemented"),
    ("use_qalora", "QA-LoRA is not implemented"),
    ("modules_to_save", "fully trained extra modules (modules_to_save) are not implemented"),
    ("target_parameters", "LoRA on bare parameters (target_parameters) is not implemented"),
    ("layer_replication", "layer replication is not implemented"),
    ("trainable_token_indices", "trainable token embeddings are not implemented"),
    ("alora_invocation_tokens", "activated LoRA (alora_invocation_tokens) is not implemented"),
    ("arrow_config", "Arrow routing is not implemented"),
    ("megatron_config", "Megatron parallel layers are not implemented"),
];

/// True for an unset value: null, false, an empty list, object or string.
fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Refuses settings of `cfg` that change what the weights mean and copra-lab does not
/// implement (see [`FIXED_SETTINGS`]; also `bias` other than `none`).
pub fn check_supported(cfg: &Value, path: &Path) -> Result<()> {
    for (key, why) in FIXED_SETTINGS {
        if let Some(v) = cfg.get(*key).filter(|v| !is_unset(v)) {
            bail!("{}: {key} is {v}: {why} in copra-lab; export a plain LoRA adapter", path.display());
        }
    }
    match cfg.get("bias") {
        None | Some(Value::Null) => {}
        Some(Value::String(b)) if b == "none" => {}
        Some(b) => bail!(
            "{}: bias is {b}: trained biases are not implemented in copra-lab; export the adapter with bias \"none\"",
            path.display()
        ),
    }
    Ok(())
}

/// The family `cfg`'s `auto_mapping.base_model_class` names, with the class name; `None`
/// when the file does not say. An architecture copra-lab cannot run is an error.
pub fn declared_family(cfg: &Value, path: &Path) -> Result<Option<(Family, String)>> {
    let class = cfg.get("auto_mapping").and_then(|m| m.get("base_model_class")).and_then(Value::as_str);
    let Some(class) = class else { return Ok(None) };
    let family = family_of_class(class).ok_or_else(|| {
        let known: Vec<&str> = crate::model::checkpoint::encoder_names().iter().map(|n| n.class).collect();
        anyhow!("{}: the adapter was made for a {class}; copra-lab runs {} adapters", path.display(), known.join(", "))
    })?;
    Ok(Some((family, class.to_string())))
}

/// Errors when an adapter of `family` (as `evidence` shows) does not belong on a backbone
/// of layout `layout`.
pub fn check_family(family: Family, evidence: &str, layout: PeftLayout, path: &Path) -> Result<()> {
    let backbone = layout.names;
    if family != backbone {
        bail!(
            "{}: the adapter was made for a {} ({evidence}) but the backbone is a {}; use it with {}",
            path.display(),
            family.class,
            backbone.class,
            family.backbone_hint
        );
    }
    Ok(())
}

/// Module names of `family` that copra-lab can adapt, for blocks `0..blocks` of every tower,
/// in every naming the family's files use (under the task-head prefix, so that suffixes match
/// with or without it).
fn known_module_names(family: Family, blocks: usize) -> Vec<String> {
    let mut names = Vec::new();
    for spelling in family.adapter {
        for tower in 0..family.towers.len() {
            for b in 0..blocks {
                for m in super::TargetModule::ALL {
                    names.push(format!("{}{}", family.model_prefix, family.module_name(spelling, tower, b, m)));
                }
            }
        }
    }
    names
}

/// PEFT's list matching: an entry equals the module name or is a dot-separated suffix of it.
fn list_entry_matches(entry: &str, name: &str) -> bool {
    name == entry || name.ends_with(&format!(".{entry}"))
}

/// A module selection (`target_modules` or `exclude_modules`) as PEFT reads it: a list of
/// names or suffixes, a regular expression (full match), or `all-linear`.
#[derive(Debug)]
enum Selection {
    Names(Vec<String>),
    Regex(Pattern),
    AllLinear,
}

impl Selection {
    fn read(cfg: &Value, key: &str, path: &Path) -> Result<Option<Selection>> {
        match cfg.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s == "all-linear" => Ok(Some(Selection::AllLinear)),
            Some(Value::String(s)) => Pattern::parse(s)
                .map(|p| Some(Selection::Regex(p)))
                .map_err(|e| anyhow!("{}: {key}: {e}; write it as a list of module names", path.display())),
            Some(Value::Array(items)) => {
                let names = items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| anyhow!("{}: {key} must be a list of module names", path.display()))?;
                Ok(Some(Selection::Names(names)))
            }
            Some(v) => bail!("{}: {key} is {v}; expected a list of module names or a pattern", path.display()),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Selection::Names(names) => names.iter().any(|e| list_entry_matches(e, name)),
            Selection::Regex(p) => p.full_match(name),
            Selection::AllLinear => true,
        }
    }
}

/// `layers_to_transform` as a list of layer indices (`None`: every layer).
fn layers_to_transform(cfg: &Value, path: &Path) -> Result<Option<Vec<u64>>> {
    match cfg.get("layers_to_transform") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(Some(vec![n.as_u64().ok_or_else(|| bad_layers(path))?])),
        Some(Value::Array(items)) => {
            items.iter().map(|v| v.as_u64().ok_or_else(|| bad_layers(path))).collect::<Result<_>>().map(Some)
        }
        Some(_) => Err(bad_layers(path)),
    }
}

fn bad_layers(path: &Path) -> anyhow::Error {
    anyhow!("{}: layers_to_transform must be a layer index or a list of them", path.display())
}

/// One tensor's module as the file names it.
pub struct FileModule<'a> {
    /// The module's full name in the base model (`encoder.layer.0.attention.self.query`).
    pub name: &'a str,
    /// The tensor's key in the weights file.
    pub tensor: &'a str,
    /// How the name is written (its block list is what `layers_pattern` must name).
    pub spelling: &'static Spelling,
    /// The block index inside its encoder.
    pub layer: usize,
}

/// The module selection of an adapter config, checked against every tensor of its file.
#[derive(Debug)]
pub struct Targets {
    target: Option<Selection>,
    exclude: Option<Selection>,
    layers: Option<Vec<u64>>,
    layers_pattern: Option<Vec<String>>,
}

impl Targets {
    /// Reads `target_modules`, `exclude_modules`, `layers_to_transform` and `layers_pattern`
    /// of `cfg`; a list entry of `target_modules` that names no module copra-lab adapts in
    /// `family` (an embedding, a classifier, a typo) is refused.
    pub fn read(cfg: &Value, family: Family, path: &Path) -> Result<Targets> {
        let target = Selection::read(cfg, "target_modules", path)?;
        if let Some(Selection::Names(entries)) = &target {
            let known = known_module_names(family, 64);
            if let Some(e) = entries.iter().find(|e| !known.iter().any(|n| list_entry_matches(e, n))) {
                bail!(
                    "{}: target_modules names '{e}', which is not a module copra-lab adapts in a {} (the attention and MLP projections of each block); remove it or export the adapter without it",
                    path.display(),
                    family.class
                );
            }
        }
        let layers_pattern = match cfg.get("layers_pattern") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(vec![s.clone()]),
            Some(Value::Array(items)) => Some(items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()),
            Some(v) => bail!("{}: layers_pattern is {v}; expected a name such as \"layers\"", path.display()),
        };
        Ok(Targets {
            target,
            exclude: Selection::read(cfg, "exclude_modules", path)?,
            layers: layers_to_transform(cfg, path)?,
            layers_pattern,
        })
    }

    /// Errors when PEFT would not load `module`'s weights under this config (so applying them
    /// would give another model than PEFT's), naming the tensor and the key.
    pub fn check(&self, module: &FileModule, path: &Path) -> Result<()> {
        let tensor = module.tensor;
        if let Some(t) = &self.target {
            if !t.matches(module.name) {
                bail!(
                    "{}: tensor '{tensor}' adapts {}, which target_modules does not select (PEFT would not load it); fix target_modules or remove the tensor",
                    path.display(),
                    module.name
                );
            }
        }
        if self.exclude.as_ref().is_some_and(|x| x.matches(module.name)) {
            bail!(
                "{}: tensor '{tensor}' adapts {}, which exclude_modules excludes (PEFT would not load it); fix exclude_modules or remove the tensor",
                path.display(),
                module.name
            );
        }
        if let Some(layers) = &self.layers {
            if let Some(patterns) = &self.layers_pattern {
                let wanted = module.spelling.layers_pattern();
                if !patterns.iter().any(|p| p == wanted) {
                    bail!(
                        "{}: layers_pattern {patterns:?} does not name the block list of '{tensor}' (\"{wanted}\"); PEFT would adapt no layer",
                        path.display()
                    );
                }
            }
            if !layers.contains(&(module.layer as u64)) {
                bail!(
                    "{}: tensor '{tensor}' is in layer {}, which layers_to_transform {layers:?} leaves out (PEFT would not load it); fix layers_to_transform or remove the tensor",
                    path.display(),
                    module.layer
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BERT: Family = &crate::model::bert::NAMES;

    fn p() -> &'static Path {
        Path::new("adapter_config.json")
    }

    fn module<'a>(name: &'a str, _bert: (), layer: usize) -> FileModule<'a> {
        FileModule { name, tensor: name, spelling: BERT.written(), layer }
    }

    #[test]
    fn settings_that_change_the_meaning_are_refused_by_key() {
        assert!(check_supported(&json!({"use_dora": false, "bias": "none", "modules_to_save": null}), p()).is_ok());
        for (cfg, needle) in [
            (json!({"use_dora": true}), "use_dora is true"),
            (json!({"fan_in_fan_out": true}), "fan_in_fan_out"),
            (json!({"bias": "all"}), "bias is \"all\""),
            (json!({"bias": "lora_only"}), "bias"),
            (json!({"modules_to_save": ["classifier"]}), "modules_to_save"),
            (json!({"lora_bias": true}), "lora_bias"),
            (json!({"layer_replication": [[0, 2]]}), "layer_replication"),
        ] {
            let err = check_supported(&cfg, p()).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn base_model_class_names_the_family() {
        let cfg = json!({"auto_mapping": {"base_model_class": "BertModel"}});
        assert_eq!(declared_family(&cfg, p()).unwrap().unwrap().0, BERT);
        assert_eq!(declared_family(&json!({}), p()).unwrap(), None);
        let err = declared_family(&json!({"auto_mapping": {"base_model_class": "LlamaModel"}}), p()).unwrap_err();
        assert!(err.to_string().contains("LlamaModel"), "{err}");
        let err = check_family(BERT, "x", PeftLayout::VIT, p()).unwrap_err().to_string();
        assert!(err.contains("made for a BertModel") && err.contains("backbone is a ViTModel"), "{err}");
    }

    #[test]
    fn module_selection_follows_peft() {
        let q = "encoder.layer.0.attention.self.query";
        let v = "encoder.layer.2.attention.self.value";
        let t = Targets::read(&json!({"target_modules": ["query"]}), BERT, p()).unwrap();
        assert!(t.check(&module(q, (), 0), p()).is_ok());
        let err = t.check(&module(v, (), 2), p()).unwrap_err().to_string();
        assert!(err.contains("target_modules does not select"), "{err}");
        // Unknown entries are refused up front.
        let err = Targets::read(&json!({"target_modules": ["query", "word_embeddings"]}), BERT, p());
        assert!(err.unwrap_err().to_string().contains("'word_embeddings'"));
        assert!(Targets::read(&json!({"target_modules": ["dense"]}), BERT, p()).is_ok());
        assert!(Targets::read(&json!({"target_modules": ["q_proj"]}), BERT, p()).is_err());
        // layers_to_transform and layers_pattern.
        let cfg =
            json!({"target_modules": ["query", "value"], "layers_to_transform": [0, 1], "layers_pattern": "layer"});
        let t = Targets::read(&cfg, BERT, p()).unwrap();
        assert!(t.check(&module(q, (), 0), p()).is_ok());
        let err = t.check(&module(v, (), 2), p()).unwrap_err().to_string();
        assert!(err.contains("layers_to_transform [0, 1] leaves out"), "{err}");
        let cfg = json!({"layers_to_transform": 0, "layers_pattern": "layers"});
        let err = Targets::read(&cfg, BERT, p()).unwrap().check(&module(q, (), 0), p());
        assert!(err.unwrap_err().to_string().contains("layers_pattern"));
        // A regular expression and exclude_modules.
        let cfg = json!({"target_modules": r"encoder\.layer\.\d+\.attention\.self\.(query|key)", "exclude_modules": ["layer.0.attention.self.key"]});
        let t = Targets::read(&cfg, BERT, p()).unwrap();
        assert!(t.check(&module(q, (), 0), p()).is_ok());
        assert!(t.check(&module(v, (), 2), p()).is_err());
        let k0 = "encoder.layer.0.attention.self.key";
        assert!(t.check(&module(k0, (), 0), p()).unwrap_err().to_string().contains("exclude_modules"));
    }
}
