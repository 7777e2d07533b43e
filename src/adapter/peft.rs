//! The PEFT adapter format as PEFT 0.21 writes it: `adapter_model.safetensors`
//! with A `[r, in]` and B `[out, r]` per module, and `adapter_config.json`. The
//! module names are those of the base model ([`PeftLayout`]):
//! - transformers-5 `ViTModel`: `base_model.model.layers.{i}.attention.{q,k,v,o}_proj.lora_{A,B}.weight`
//!   (`mlp.fc1` / `mlp.fc2` for MLP targets);
//! - `BertModel`: `base_model.model.encoder.layer.{i}.attention.self.{query,key,value}`,
//!   `attention.output.dense`, `intermediate.dense`, `output.dense`;
//! - `CLIPModel`: `base_model.model.{vision,text}_model.encoder.layers.{i}.self_attn.{q,k,v,out}_proj`,
//!   `mlp.fc1`, `mlp.fc2` (copra-lab numbers the text tower's blocks after the vision tower's).
//!
//! The names come from each architecture's table ([`super::names::EncoderNames`], in the
//! encoder's own file), so this file knows no architecture by name.
//!
//! Reading accepts all of these and the transformers-4 ViT names
//! (`encoder.layer.{i}.attention.attention.query`), in the layout of the backbone it is read
//! for: an adapter made for another architecture (by `auto_mapping.base_model_class`, which
//! copra-lab also writes, or by its tensor names) and PEFT settings copra-lab does not
//! implement are refused ([`super::peft_config`]).

use super::names::{readings, EncoderNames, NameMatch};
use super::peft_config::{self, FileModule};
use super::{Adapter, LoraFactors, LoraSpec, ModuleKey, Scaling, TargetModule};
use crate::linalg::Matrix;
use crate::report::atomic::write_atomic;
use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// File name of the adapter weights.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// File name of the adapter config.
pub const CONFIG_FILE: &str = "adapter_config.json";

/// The most towers an encoder has (CLIP: vision and text).
const MAX_TOWERS: usize = 2;

/// How PEFT names the adapted modules of a backbone: its architecture's name table and, for
/// a backbone of several towers, the blocks of each (blocks are numbered globally, tower
/// after tower).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeftLayout {
    /// The architecture's names.
    pub names: &'static EncoderNames,
    /// Blocks per tower (only read when `names.towers` has more than one).
    pub tower_blocks: [usize; MAX_TOWERS],
}

impl PeftLayout {
    /// The built-in backbone's layout (a transformers-5 `ViTModel`).
    pub const VIT: PeftLayout = PeftLayout::single(&crate::model::vit::NAMES);

    /// The layout of a one-tower architecture.
    pub const fn single(names: &'static EncoderNames) -> PeftLayout {
        PeftLayout { names, tower_blocks: [0; MAX_TOWERS] }
    }

    /// The layout of a two-tower architecture with `first` and `second` blocks.
    pub const fn two_towers(names: &'static EncoderNames, first: usize, second: usize) -> PeftLayout {
        PeftLayout { names, tower_blocks: [first, second] }
    }

    /// The module's path inside its block.
    pub fn module_path(self, module: TargetModule) -> &'static str {
        self.names.written().module(module)
    }

    /// The block-list name PEFT's `layers_pattern` expects.
    fn layers_pattern(self) -> &'static str {
        self.names.written().layers_pattern()
    }

    /// Whether the architecture has several towers.
    fn multi_tower(self) -> bool {
        self.names.towers.len() > 1
    }

    /// The tower of global block `block` and the block's index there.
    fn place(self, block: usize) -> (usize, usize) {
        if !self.multi_tower() {
            return (0, block);
        }
        let mut offset = 0;
        for (t, &n) in self.tower_blocks.iter().enumerate().take(self.names.towers.len()) {
            if block < offset + n || t + 1 == self.names.towers.len() {
                return (t, block - offset);
            }
            offset += n;
        }
        (0, block)
    }

    /// The first global block of tower `tower`.
    fn tower_offset(self, tower: usize) -> usize {
        self.tower_blocks[..tower].iter().sum()
    }

    /// The module's full name inside the base model.
    pub fn module_name(self, key: &ModuleKey) -> String {
        let (tower, layer) = self.place(key.block);
        self.names.module_name(self.names.written(), tower, layer, key.module)
    }

    /// The PEFT key of one factor (`"A"` or `"B"`).
    pub fn key(self, key: &ModuleKey, factor: &str) -> String {
        format!("base_model.model.{}.lora_{factor}.weight", self.module_name(key))
    }

    /// `target_modules` for adapting `targets` in `blocks`: the architecture's list entries
    /// (PEFT matches them as name suffixes), with `layers_to_transform` naming the blocks.
    /// An exact regular expression over the adapted blocks is written instead when an entry
    /// would also match a module that is not adapted (BERT's `output.dense` is a suffix of
    /// `attention.output.dense`), or when a backbone of several towers is adapted on some
    /// blocks only (`layers_to_transform` could not tell the towers' layer numbers apart).
    fn target_modules(self, targets: &[TargetModule], blocks: &[usize]) -> serde_json::Value {
        let spelling = self.names.written();
        let entry = |m: TargetModule| self.names.target_modules[m.index()];
        let ambiguous = targets.iter().any(|&m| {
            TargetModule::ALL.into_iter().filter(|o| !targets.contains(o)).any(|o| {
                let (e, path) = (entry(m), spelling.module(o));
                path == e || path.ends_with(&format!(".{e}"))
            })
        });
        let total: usize = self.tower_blocks.iter().take(self.names.towers.len()).sum();
        let partial = self.multi_tower() && blocks.len() != total;
        if !ambiguous && !partial {
            return targets.iter().map(|&m| entry(m)).collect::<Vec<_>>().into();
        }
        let escape = |s: &str| s.replace('.', "\\.");
        let places: Vec<String> = (0..self.names.towers.len())
            .filter_map(|t| {
                let layers: Vec<String> = blocks
                    .iter()
                    .map(|&b| self.place(b))
                    .filter(|(tower, _)| *tower == t)
                    .map(|(_, layer)| layer.to_string())
                    .collect();
                let list = self.names.module_name(spelling, t, 0, TargetModule::Query);
                let list = list.split_once(".0.").map(|(l, _)| l.to_string()).unwrap_or_default();
                (!layers.is_empty()).then(|| format!("{}\\.({})", escape(&list), layers.join("|")))
            })
            .collect();
        let paths: Vec<String> = targets.iter().map(|&m| escape(spelling.module(m))).collect();
        let places = if self.multi_tower() { format!("({})", places.join("|")) } else { places.join("|") };
        format!("{places}\\.({})", paths.join("|")).into()
    }
}

/// The PEFT key of one factor (`"A"` or `"B"`) in the ViT layout.
pub fn peft_key(key: &ModuleKey, factor: &str) -> String {
    PeftLayout::VIT.key(key, factor)
}

/// A LoRA factor's name taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ParsedKey {
    /// Every architecture and spelling that names the module so (several when the name is
    /// shared, such as `encoder.layer.0.intermediate.dense` of ViT and BERT).
    readings: Vec<NameMatch>,
    /// `'A'` or `'B'`.
    factor: char,
    /// The module's full name in the base model, as the file writes it.
    module_name: String,
}

impl ParsedKey {
    /// The architecture the name belongs to, when only one names it so.
    fn family(&self) -> Option<&'static EncoderNames> {
        let first = self.readings.first()?.names;
        self.readings.iter().all(|r| r.names == first).then_some(first)
    }

    /// The reading under `names`, if the name has one.
    fn reading(&self, names: &EncoderNames) -> Option<&NameMatch> {
        self.readings.iter().find(|r| r.names == names)
    }
}

/// Takes a LoRA factor's name apart; `None` when it is not a factor of a module copra-lab adapts.
fn parse_key(name: &str) -> Option<ParsedKey> {
    let rest = name.strip_prefix("base_model.model.")?;
    let (body, factor) = if let Some(b) = rest.strip_suffix(".lora_A.weight") {
        (b, 'A')
    } else {
        (rest.strip_suffix(".lora_B.weight")?, 'B')
    };
    let found = readings(body, &crate::model::checkpoint::encoder_names());
    (!found.is_empty()).then(|| ParsedKey { readings: found, factor, module_name: body.to_string() })
}

/// The global key of a parsed module under `layout`, or an error naming the mismatch.
fn place_key(parsed: &ParsedKey, layout: PeftLayout, name: &str, origin: &Path) -> Result<ModuleKey> {
    let names = layout.names;
    let Some(reading) = parsed.reading(names) else {
        let others: Vec<&str> = parsed.readings.iter().map(|r| r.names.class).collect();
        bail!(
            "{}: tensor '{name}' is not a {} module: it is named like a {} module; use the adapter with the backbone it was made for",
            origin.display(),
            names.class,
            others.join(" or ")
        );
    };
    if !layout.multi_tower() {
        return Ok(ModuleKey { block: reading.layer, module: reading.module });
    }
    let depth = layout.tower_blocks[reading.tower];
    if reading.layer >= depth {
        bail!(
            "{}: tensor '{name}' is for layer {} but the backbone's {} has {depth} layers; use the adapter with the backbone it was trained on",
            origin.display(),
            reading.layer,
            names.towers[reading.tower]
        );
    }
    Ok(ModuleKey { block: layout.tower_offset(reading.tower) + reading.layer, module: reading.module })
}

/// The family of an adapter file's tensors: the one their names share, or an error when they
/// mix families. `None` when every name is shared by several architectures.
fn family_of_names(keys: &[(String, ParsedKey)], origin: &Path) -> Result<Option<(&'static EncoderNames, String)>> {
    let mut found: Option<(&'static EncoderNames, &str)> = None;
    for (name, parsed) in keys {
        let Some(family) = parsed.family() else { continue };
        match found {
            None => found = Some((family, name)),
            Some((f, first)) if f != family => bail!(
                "{}: tensors '{first}' ({}) and '{name}' ({}) belong to different architectures; the file is not one adapter",
                origin.display(),
                f.class,
                family.class
            ),
            Some(_) => {}
        }
    }
    Ok(found.map(|(f, name)| (f, format!("tensor '{name}'"))))
}

/// The `adapter_config.json` text for `adapter` on a base model of `layout`.
pub fn config_json(adapter: &Adapter, base_model: &str, layout: PeftLayout) -> String {
    let spec = &adapter.spec;
    let targets: Vec<TargetModule> =
        TargetModule::ALL.into_iter().filter(|&m| adapter.modules.keys().any(|k| k.module == m)).collect();
    let blocks: Vec<usize> = adapter.blocks().into_iter().collect();
    let mut rank_pattern = serde_json::Map::new();
    for (k, f) in &adapter.modules {
        if f.rank() != spec.rank {
            rank_pattern.insert(layout.module_name(k), f.rank().into());
        }
    }
    let target_modules = layout.target_modules(&targets, &blocks);
    // A regular expression names the blocks itself; on CLIP a list means every block of both
    // towers, whose layer numbers `layers_to_transform` could not tell apart.
    let regex = target_modules.is_string() || layout.multi_tower();
    let v = serde_json::json!({
        "peft_type": "LORA",
        "auto_mapping": {"base_model_class": layout.names.class},
        "task_type": null,
        "base_model_name_or_path": base_model,
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "use_rslora": spec.scaling == Scaling::Rslora,
        "lora_dropout": spec.dropout,
        "target_modules": target_modules,
        "layers_to_transform": if regex { serde_json::Value::Null } else { blocks.into() },
        "layers_pattern": if regex { serde_json::Value::Null } else { layout.layers_pattern().into() },
        "rank_pattern": rank_pattern,
        "alpha_pattern": {},
        "bias": "none",
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
        "use_dora": false,
        "revision": null,
    });
    serde_json::to_string_pretty(&v).expect("static json")
}

/// Serialises the adapter weights to safetensors bytes under `layout`'s names.
pub fn weights_bytes(adapter: &Adapter, layout: PeftLayout) -> Result<Vec<u8>> {
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (key, f) in &adapter.modules {
        for (name, m) in [("A", &f.a), ("B", &f.b)] {
            let bytes: Vec<u8> = m.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            buffers.push((layout.key(key, name), vec![m.rows, m.cols], bytes));
        }
    }
    let views: Vec<(String, TensorView)> = buffers
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    Ok(safetensors::tensor::serialize(views, Some(meta))?)
}

/// Writes `adapter_model.safetensors` and `adapter_config.json` into `dir` for a ViT base model.
pub fn save(adapter: &Adapter, dir: &Path, base_model: &str) -> Result<()> {
    save_as(adapter, dir, base_model, PeftLayout::VIT)
}

/// Writes `adapter_model.safetensors` and `adapter_config.json` into `dir` under `layout`'s names.
pub fn save_as(adapter: &Adapter, dir: &Path, base_model: &str, layout: PeftLayout) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomic(&dir.join(WEIGHTS_FILE), &weights_bytes(adapter, layout)?)?;
    write_atomic(&dir.join(CONFIG_FILE), config_json(adapter, base_model, layout).as_bytes())?;
    Ok(())
}

/// The rank `rank_pattern` assigns to `key`, if an entry matches it. Keys match as PEFT
/// matches them: the entry equals the module's full name or a dot-separated suffix of it
/// (transformers-5 `layers.{i}.attention.q_proj` or transformers-4 names).
fn configured_rank(cfg: &serde_json::Value, key: &ModuleKey, layout: PeftLayout) -> Option<usize> {
    let pattern = cfg.get("rank_pattern")?.as_object()?;
    let (tower, layer) = layout.place(key.block);
    let names: Vec<String> =
        layout.names.adapter.iter().map(|s| layout.names.module_name(s, tower, layer, key.module)).collect();
    pattern.iter().find_map(|(k, v)| {
        let hit = names.iter().any(|n| n == k || n.ends_with(&format!(".{k}")));
        hit.then(|| v.as_u64().map(|r| r as usize)).flatten()
    })
}

/// Reads a PEFT adapter directory of a ViT base model.
pub fn load(dir: &Path) -> Result<Adapter> {
    load_as(dir, PeftLayout::VIT)
}

/// Reads a PEFT adapter directory for a base model of `layout`. The adapter must have been
/// made for that architecture (its config's `auto_mapping.base_model_class` and its tensor
/// names agree with `layout`), use only what copra-lab implements
/// ([`peft_config::check_supported`]), and hold exactly the modules its config selects
/// ([`peft_config::Targets`]); errors name the file's own tensor keys.
pub fn load_as(dir: &Path, layout: PeftLayout) -> Result<Adapter> {
    let cfg_path = dir.join(CONFIG_FILE);
    if dir.is_file() {
        bail!(
            "{} is a file, not an adapter folder; pass the folder holding {CONFIG_FILE} and {WEIGHTS_FILE}",
            dir.display()
        );
    }
    let text = std::fs::read_to_string(&cfg_path).with_context(|| {
        format!("cannot read {}: pass a PEFT adapter folder (adapter_config.json + {WEIGHTS_FILE})", cfg_path.display())
    })?;
    let cfg: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| anyhow!("{} is not valid JSON: {e}", cfg_path.display()))?;
    if cfg.get("peft_type").and_then(|v| v.as_str()) != Some("LORA") {
        bail!("{}: peft_type is not LORA; only LoRA adapters are supported", cfg_path.display());
    }
    let rank =
        cfg.get("r").and_then(|v| v.as_u64()).ok_or_else(|| anyhow!("{}: missing integer 'r'", cfg_path.display()))?
            as usize;
    // PEFT's defaults when a key is absent; a value of the wrong type is an error, not a default.
    let setting = |key: &str, read: fn(&serde_json::Value) -> Option<f64>, default: f64| -> Result<f64> {
        match cfg.get(key) {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(v) => {
                read(v).ok_or_else(|| anyhow!("{}: {key} is {v}, which is not a valid value", cfg_path.display()))
            }
        }
    };
    let alpha = setting("lora_alpha", |v| v.as_f64().filter(|a| a.is_finite()), 8.0)?;
    let rslora = setting("use_rslora", |v| v.as_bool().map(f64::from), 0.0)? == 1.0;
    let dropout = setting("lora_dropout", |v| v.as_f64().filter(|d| (0.0..1.0).contains(d)), 0.0)?;
    if cfg.get("alpha_pattern").and_then(|v| v.as_object()).is_some_and(|m| !m.is_empty()) {
        bail!("{}: alpha_pattern is not supported; fold per-module alphas into the B factors", cfg_path.display());
    }
    peft_config::check_supported(&cfg, &cfg_path)?;
    let declared = peft_config::declared_family(&cfg, &cfg_path)?;
    let w_path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&w_path).with_context(|| format!("cannot read {}", w_path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        anyhow!("{} is not a valid safetensors file ({e}): it may be truncated or corrupt", w_path.display())
    })?;
    let mut names = st.names();
    names.sort();
    let keys: Vec<(String, ParsedKey)> = names
        .into_iter()
        .map(|name| match parse_key(name) {
            Some(parsed) => Ok((name.to_string(), parsed)),
            None => Err(anyhow!(
                "{}: unexpected tensor '{name}': not a LoRA factor of a {} layer",
                w_path.display(),
                crate::model::checkpoint::encoder_names().iter().map(|n| n.class).collect::<Vec<_>>().join(", ")
            )),
        })
        .collect::<Result<_>>()?;
    // The architecture: what the config says, checked against the tensor names, then the backbone.
    let by_names = family_of_names(&keys, &w_path)?;
    if let (Some((declared, class)), Some((named, evidence))) = (&declared, &by_names) {
        if declared != named {
            bail!(
                "{}: base_model_class is {class} but {evidence} is named like a {} module; the config and the weights do not belong together",
                cfg_path.display(),
                named.class
            );
        }
    }
    let family = match (&declared, &by_names) {
        (Some((f, class)), _) => {
            peft_config::check_family(f, &format!("base_model_class {class}"), layout, dir)?;
            *f
        }
        (None, Some((f, evidence))) => {
            peft_config::check_family(f, evidence, layout, dir)?;
            *f
        }
        (None, None) => layout.names,
    };
    let targets = peft_config::Targets::read(&cfg, family, &cfg_path)?;
    let mut parts: BTreeMap<ModuleKey, (Option<Matrix>, Option<Matrix>, String)> = BTreeMap::new();
    for (name, parsed) in &keys {
        if let Some(reading) = parsed.reading(layout.names) {
            let file_module = FileModule {
                name: &parsed.module_name,
                tensor: name,
                spelling: reading.spelling,
                layer: reading.layer,
            };
            targets.check(&file_module, &cfg_path)?;
        }
        let key = place_key(parsed, layout, name, &w_path)?;
        let view = st.tensor(name).map_err(|e| anyhow!("{}: tensor '{name}': {e}", w_path.display()))?;
        if view.dtype() != Dtype::F32 || view.shape().len() != 2 {
            bail!(
                "{}: tensor '{name}' must be a 2-D float32 matrix, found {:?} {:?}",
                w_path.display(),
                view.dtype(),
                view.shape()
            );
        }
        let data: Vec<f32> =
            view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if let Some(bad) = data.iter().find(|v| !v.is_finite()) {
            bail!(
                "{}: tensor '{name}' holds a non-finite value ({bad}); the adapter is unusable (diverged training?): retrain it with a lower learning rate",
                w_path.display()
            );
        }
        let m = Matrix::from_vec(view.shape()[0], view.shape()[1], data);
        let slot = parts.entry(key).or_default();
        if parsed.factor == 'A' {
            slot.0 = Some(m);
            slot.2 = name.clone();
        } else {
            slot.1 = Some(m);
        }
    }
    let mut modules = BTreeMap::new();
    for (key, (a, b, a_name)) in parts {
        let (Some(a), Some(b)) = (a, b) else {
            bail!("{}: module {key} has only one of lora_A / lora_B", w_path.display());
        };
        if b.cols != a.rows {
            bail!(
                "{}: tensor '{a_name}': lora_B is {:?} but lora_A is {:?}; ranks disagree",
                w_path.display(),
                b.shape(),
                a.shape()
            );
        }
        let expected = configured_rank(&cfg, &key, layout).unwrap_or(rank);
        if a.rows != expected {
            bail!(
                "{}: tensor '{a_name}' has rank {} but {} says r = {expected}; the config and the weights disagree, fix one of them",
                w_path.display(),
                a.rows,
                cfg_path.display()
            );
        }
        modules.insert(key, LoraFactors { a, b });
    }
    if modules.is_empty() {
        bail!("{}: no LoRA factors found", w_path.display());
    }
    let mut targets: Vec<TargetModule> = modules.keys().map(|k| k.module).collect();
    targets.sort();
    targets.dedup();
    let spec =
        LoraSpec { rank, alpha, scaling: if rslora { Scaling::Rslora } else { Scaling::Standard }, dropout, targets };
    Ok(Adapter { spec, modules })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bert_layout() -> PeftLayout {
        PeftLayout::single(&crate::model::bert::NAMES)
    }

    fn sample() -> Adapter {
        let mut modules = BTreeMap::new();
        for block in 0..2 {
            for module in [TargetModule::Query, TargetModule::Value, TargetModule::Fc1] {
                let out = if module == TargetModule::Fc1 { 6 } else { 4 };
                let a = Matrix::from_vec(2, 4, (0..8).map(|i| i as f32 * 0.1 + block as f32).collect());
                let b = Matrix::from_vec(out, 2, (0..out * 2).map(|i| -(i as f32) * 0.05).collect());
                modules.insert(ModuleKey { block, module }, LoraFactors { a, b });
            }
        }
        Adapter { spec: LoraSpec::default(), modules }
    }

    #[test]
    fn keys_follow_peft_transformers5_layout() {
        let k = ModuleKey { block: 3, module: TargetModule::Value };
        assert_eq!(peft_key(&k, "A"), "base_model.model.layers.3.attention.v_proj.lora_A.weight");
        let k = ModuleKey { block: 0, module: TargetModule::Fc2 };
        assert_eq!(peft_key(&k, "B"), "base_model.model.layers.0.mlp.fc2.lora_B.weight");
        // (class, layers_pattern, tower, layer, module) of every reading
        type Reading = (&'static str, &'static str, usize, usize, TargetModule);
        let read = |name: &str| -> (Vec<Reading>, char) {
            let p = parse_key(name).unwrap();
            let r = p.readings.iter().map(|r| (r.names.class, r.spelling.layers_pattern(), r.tower, r.layer, r.module));
            (r.collect(), p.factor)
        };
        let p = read("base_model.model.layers.3.attention.v_proj.lora_A.weight");
        assert_eq!(p, (vec![("ViTModel", "layers", 0, 3, TargetModule::Value)], 'A'));
        let p = read("base_model.model.encoder.layer.11.attention.attention.query.lora_B.weight");
        assert_eq!(p.0[0], ("ViTModel", "layer", 0, 11, TargetModule::Query));
        assert_eq!(p.1, 'B');
        let name = "base_model.model.encoder.layer.11.attention.attention.query.lora_B.weight";
        assert_eq!(parse_key(name).unwrap().module_name, "encoder.layer.11.attention.attention.query");
        let p = read("base_model.model.encoder.layer.1.attention.self.key.lora_A.weight");
        assert_eq!(p.0, [("BertModel", "layer", 0, 1, TargetModule::Key)]);
        let p = read("base_model.model.encoder.layer.1.intermediate.dense.lora_A.weight");
        assert_eq!(
            p.0,
            [("ViTModel", "layer", 0, 1, TargetModule::Fc1), ("BertModel", "layer", 0, 1, TargetModule::Fc1)]
        );
        let p = read("base_model.model.text_model.encoder.layers.0.self_attn.out_proj.lora_B.weight");
        assert_eq!(p.0, [("CLIPModel", "layers", 1, 0, TargetModule::Output)]);
    }

    #[test]
    fn adapters_of_another_architecture_are_refused_even_when_shapes_fit() {
        // Issue 25: a BertModel adapter loaded on a ViT (and a ViT adapter on BERT) with exit 0.
        let dir = std::env::temp_dir().join(format!("copra-peft-arch-{}", std::process::id()));
        save_as(&sample(), &dir, "bert", bert_layout()).unwrap();
        let err = load_as(&dir, PeftLayout::VIT).unwrap_err().to_string();
        assert!(err.contains("made for a BertModel") && err.contains("backbone is a ViTModel"), "{err}");
        assert!(load_as(&dir, bert_layout()).is_ok());
        // Without base_model_class the tensor names decide.
        let cfg = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg).unwrap().replace("\"auto_mapping\"", "\"unused\"");
        std::fs::write(&cfg, text).unwrap();
        let err = load_as(&dir, PeftLayout::VIT).unwrap_err().to_string();
        assert!(err.contains("made for a BertModel") && err.contains("attention.self.query"), "{err}");
        save_as(&sample(), &dir, "vit", PeftLayout::VIT).unwrap();
        let err = load_as(&dir, bert_layout()).unwrap_err().to_string();
        assert!(err.contains("made for a ViTModel"), "{err}");
        // A config that names one architecture over weights of another.
        let text = std::fs::read_to_string(&cfg).unwrap().replace("ViTModel", "BertModel");
        std::fs::write(&cfg, text).unwrap();
        let err = load_as(&dir, PeftLayout::VIT).unwrap_err().to_string();
        assert!(err.contains("do not belong together"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn config_keys_that_change_the_meaning_are_refused() {
        let dir = std::env::temp_dir().join(format!("copra-peft-keys-{}", std::process::id()));
        let edit = |from: &str, to: &str| {
            save(&sample(), &dir, "builtin").unwrap();
            let cfg = dir.join(CONFIG_FILE);
            let text = std::fs::read_to_string(&cfg).unwrap();
            assert!(text.contains(from), "{from} not in {text}");
            std::fs::write(&cfg, text.replace(from, to)).unwrap();
            load(&dir).map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(edit("\"use_dora\": false", "\"use_dora\": false").is_ok());
        for (from, to, needle) in [
            ("\"use_dora\": false", "\"use_dora\": true", "use_dora"),
            ("\"fan_in_fan_out\": false", "\"fan_in_fan_out\": true", "fan_in_fan_out"),
            ("\"bias\": \"none\"", "\"bias\": \"all\"", "bias"),
            ("\"modules_to_save\": null", "\"modules_to_save\": [\"classifier\"]", "modules_to_save"),
            ("\"layers_to_transform\": [\n    0,\n    1\n  ]", "\"layers_to_transform\": [0]", "leaves out"),
            ("\"layers_pattern\": \"layers\"", "\"layers_pattern\": \"blocks\"", "layers_pattern"),
            ("\"q_proj\",", "\"q_proj\", \"patch_embeddings\",", "'patch_embeddings'"),
            ("\"q_proj\",", "", "target_modules does not select"),
            ("\"lora_alpha\": 1.0", "\"lora_alpha\": \"16\"", "lora_alpha is \"16\""),
            ("\"use_rslora\": true", "\"use_rslora\": \"yes\"", "use_rslora"),
        ] {
            let err = edit(from, to).unwrap_err();
            assert!(err.contains(needle) && err.lines().count() == 1, "{from} -> {to}: {err}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn save_load_round_trip_is_exact() {
        let dir = std::env::temp_dir().join(format!("copra-peft-{}", std::process::id()));
        let a = sample();
        save(&a, &dir, "builtin").unwrap();
        let b = load(&dir).unwrap();
        assert_eq!(a.modules, b.modules);
        assert_eq!(b.spec.rank, 2);
        assert_eq!(b.spec.scaling, Scaling::Rslora);
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!(cfg["target_modules"], serde_json::json!(["q_proj", "v_proj", "fc1"]));
        assert_eq!(cfg["peft_type"], "LORA");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn truncated_weights_give_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("copra-peft-trunc-{}", std::process::id()));
        save(&sample(), &dir, "builtin").unwrap();
        let p = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let err = load(&dir).unwrap_err().to_string();
        assert!(err.contains("truncated or corrupt"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn rank_pattern_matches_peft_style_suffixes() {
        let cfg = serde_json::json!({"rank_pattern": {"layers.1.attention.v_proj": 4, "fc1": 3}});
        let key = |block, module| ModuleKey { block, module };
        assert_eq!(configured_rank(&cfg, &key(1, TargetModule::Value), PeftLayout::VIT), Some(4));
        assert_eq!(
            configured_rank(&cfg, &key(11, TargetModule::Value), PeftLayout::VIT),
            None,
            "layers.11 is not layers.1"
        );
        assert_eq!(configured_rank(&cfg, &key(7, TargetModule::Fc1), PeftLayout::VIT), Some(3));
        assert_eq!(configured_rank(&serde_json::json!({}), &key(0, TargetModule::Query), PeftLayout::VIT), None);
    }

    #[test]
    fn non_finite_values_and_rank_disagreements_are_refused() {
        let dir = std::env::temp_dir().join(format!("copra-peft-nan-{}", std::process::id()));
        let mut a = sample();
        a.modules.values_mut().next().unwrap().b.data[1] = f32::INFINITY;
        save(&a, &dir, "builtin").unwrap();
        let err = load(&dir).unwrap_err().to_string();
        assert!(err.contains("non-finite value (inf)") && err.contains("layers.0.attention.q_proj.lora_B"), "{err}");
        save(&sample(), &dir, "builtin").unwrap();
        let cfg = dir.join(CONFIG_FILE);
        std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap().replace("\"r\": 2", "\"r\": 8")).unwrap();
        let err = load(&dir).unwrap_err().to_string();
        assert!(err.contains("has rank 2") && err.contains("r = 8"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
