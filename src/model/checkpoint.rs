//! Reading and writing backbones in the Hugging Face layout: a directory with
//! `config.json` and `model.safetensors` under transformers' weight names
//! (`ViTModel`, `BertModel`, `CLIPModel`), so that `from_pretrained(dir)` loads ours and we
//! load theirs. The architecture comes from `config.json`'s `model_type`.

use super::config::VitConfig;
use super::encoder::{Backbone, LinearWeights};
use super::vit::Vit;
use crate::adapter::names::EncoderNames;
use crate::adapter::TargetModule;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The built-in default backbone's `config.json`, pretrained by `copra-lab pretrain`.
pub const BUILTIN_CONFIG: &str = include_str!("../../src/backbone/config.json");
/// The built-in default backbone's `model.safetensors`.
pub const BUILTIN_WEIGHTS: &[u8] = include_bytes!("../../src/backbone/model.safetensors");

/// Name under which the built-in backbone is selected on the command line.
pub const BUILTIN_NAME: &str = "builtin";

/// Loads the built-in default backbone (no file access).
pub fn load_builtin(device: &Device) -> Result<Backbone> {
    let config: VitConfig = serde_json::from_str(BUILTIN_CONFIG).context("built-in config.json")?;
    let tensors = candle_core::safetensors::load_buffer(BUILTIN_WEIGHTS, device)
        .map_err(|e| anyhow!("built-in model.safetensors is unreadable ({e}): rebuild copra-lab"))?;
    Ok(Backbone::new(Vit::from_hf_tensors(&config, tensors, "built-in backbone")?))
}

/// Loads `builtin` or a Hugging Face model directory (`config.json` + `model.safetensors`).
pub fn load_backbone(spec: &str, device: &Device) -> Result<Backbone> {
    if spec == BUILTIN_NAME {
        return load_builtin(device);
    }
    load_dir(Path::new(spec), device)
}

/// An encoder architecture as `--backbone DIR` reads it: its `config.json` `model_type`, its
/// names (checkpoint, PEFT) and the folder reader.
pub struct Architecture {
    /// `config.json`'s `model_type`.
    pub model_type: &'static str,
    /// The architecture's names; PEFT layouts and adapter reading are built from them.
    pub names: &'static EncoderNames,
    /// Reads a folder: its path, its `config.json` text, its weights and their file's name.
    pub load: fn(&Path, &str, HashMap<String, Tensor>, &str) -> Result<Backbone>,
}

/// Every architecture copra-lab reads (the first is the default when `model_type` is absent).
/// A new encoder is its own file (with its `Architecture` and names) and one line here.
pub static ARCHITECTURES: &[&Architecture] =
    &[&super::vit::ARCHITECTURE, &super::bert::ARCHITECTURE, &super::clip::ARCHITECTURE, &super::dinov2::ARCHITECTURE];

/// The name tables of every architecture, in [`ARCHITECTURES`] order.
pub fn encoder_names() -> Vec<&'static EncoderNames> {
    ARCHITECTURES.iter().map(|a| a.names).collect()
}

/// The `model_type`s `--backbone DIR` accepts.
pub fn supported_model_types() -> Vec<&'static str> {
    ARCHITECTURES.iter().map(|a| a.model_type).collect()
}

/// Loads a Hugging Face model directory, picking the architecture from `config.json`'s
/// `model_type` (see [`ARCHITECTURES`]; `vit` when absent): `ViTModel` and
/// `ViTForImageClassification`, `BertModel` and sentence-transformers folders, `CLIPModel`.
pub fn load_dir(dir: &Path, device: &Device) -> Result<Backbone> {
    crate::util::check_path_kind(
        dir,
        crate::util::PathKind::Folder,
        "backbone directory",
        "pass a folder holding config.json and model.safetensors, or 'builtin'",
    )?;
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("cannot read {}: is this a Hugging Face model directory?", config_path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| anyhow!("{} is not valid JSON: {e}", config_path.display()))?;
    let model_type = json.get("model_type").and_then(|v| v.as_str()).unwrap_or(ARCHITECTURES[0].model_type);
    let Some(architecture) = ARCHITECTURES.iter().find(|a| a.model_type == model_type) else {
        bail!(
            "{}: model_type '{model_type}' is not supported; copra-lab reads {} checkpoints",
            config_path.display(),
            supported_model_types().join(", ")
        );
    };
    let weights = dir.join("model.safetensors");
    crate::util::check_path_kind(
        &weights,
        crate::util::PathKind::File,
        "backbone weights",
        "the backbone folder needs model.safetensors (save_pretrained writes it)",
    )?;
    let tensors = candle_core::safetensors::load(&weights, device).map_err(|e| {
        anyhow!(
            "{} is not a valid safetensors file ({e}): it may be truncated or corrupt; re-export it",
            weights.display()
        )
    })?;
    let origin = weights.display().to_string();
    (architecture.load)(dir, &text, tensors, &origin)
}

/// Named checkpoint tensors being taken apart into a model, with one-line errors that
/// name the missing or misshapen tensor.
pub struct HfTensors {
    tensors: HashMap<String, Tensor>,
    origin: String,
    class: &'static str,
}

impl HfTensors {
    /// Wraps the tensors of file `origin`, a checkpoint of transformers class `class`.
    pub fn new(tensors: HashMap<String, Tensor>, origin: &str, class: &'static str) -> HfTensors {
        HfTensors { tensors, origin: origin.to_string(), class }
    }

    /// Drops `prefix` from every name when `probe` is missing but `prefix + probe` exists
    /// (task-head checkpoints nest the encoder one level down).
    pub fn strip_prefix_if_missing(&mut self, prefix: &str, probe: &str) {
        if !self.tensors.contains_key(probe) && self.tensors.contains_key(&format!("{prefix}{probe}")) {
            let all = std::mem::take(&mut self.tensors);
            self.tensors =
                all.into_iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v))).collect();
        }
    }

    /// Whether tensor `name` is (still) there.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Removes tensor `name`, checking its shape, as `f32`.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.tensors.remove(name).ok_or_else(|| {
            anyhow!("{}: tensor '{name}' is missing: this is not a {} checkpoint", self.origin, self.class)
        })?;
        if t.dims() != shape {
            bail!(
                "{}: tensor '{name}' has shape {:?} but config.json implies {:?}: checkpoint and config.json do not match",
                self.origin,
                t.dims(),
                shape
            );
        }
        Ok(t.to_dtype(candle_core::DType::F32)?)
    }

    /// `{prefix}.weight` `[out, in]` and, when `bias`, `{prefix}.bias`.
    pub fn linear(&mut self, prefix: &str, (out, inp): (usize, usize), bias: bool) -> Result<LinearWeights> {
        let weight = self.take(&format!("{prefix}.weight"), &[out, inp])?;
        let bias = if bias { Some(self.take(&format!("{prefix}.bias"), &[out])?) } else { None };
        Ok(LinearWeights { weight, bias })
    }

    /// The six linear layers of one block, in `TargetModule::ALL` order: module `m`'s under
    /// `name(m)`, of shape `shape(m)`, with a bias where `bias(m)`.
    pub fn block_linears(
        &mut self,
        name: impl Fn(TargetModule) -> String,
        shape: impl Fn(TargetModule) -> (usize, usize),
        bias: impl Fn(TargetModule) -> bool,
    ) -> Result<Vec<LinearWeights>> {
        TargetModule::ALL.into_iter().map(|m| self.linear(&name(m), shape(m), bias(m))).collect()
    }

    /// `{prefix}.weight` and `{prefix}.bias` of a layer norm of width `d`.
    pub fn layer_norm(&mut self, prefix: &str, d: usize) -> Result<(Tensor, Tensor)> {
        Ok((self.take(&format!("{prefix}.weight"), &[d])?, self.take(&format!("{prefix}.bias"), &[d])?))
    }

    /// Errors when a tensor of a block beyond `num_hidden_layers` remains.
    pub fn refuse_extra_blocks(&self, block_prefix: &str) -> Result<()> {
        if let Some(extra) = self.tensors.keys().find(|k| k.starts_with(block_prefix)) {
            bail!(
                "{}: unexpected tensor '{extra}': the checkpoint has more blocks than config.json's num_hidden_layers",
                self.origin
            );
        }
        Ok(())
    }
}

/// The tensors of the six linear layers `linears` (in `TargetModule::ALL` order) of block
/// `layer` of tower `tower`, under their checkpoint names (`{module}.weight`, and
/// `{module}.bias` where there is one): the inverse of [`HfTensors::block_linears`].
pub fn linear_tensors(
    names: &EncoderNames,
    tower: usize,
    layer: usize,
    linears: &[LinearWeights],
) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    for (module, lw) in TargetModule::ALL.into_iter().zip(linears) {
        let name = names.checkpoint_module(tower, layer, module);
        out.push((format!("{name}.weight"), lw.weight.clone()));
        if let Some(bias) = &lw.bias {
            out.push((format!("{name}.bias"), bias.clone()));
        }
    }
    out
}

/// The backbone's tensors under Hugging Face names.
pub fn hf_tensors(backbone: &Backbone) -> Result<HashMap<String, Tensor>> {
    backbone.hf_tensors()
}

/// Writes `config.json` and `model.safetensors` into `dir` (each via a temp file and rename).
pub fn save_dir(backbone: &Backbone, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tensors = hf_tensors(backbone)?;
    let tmp = dir.join(format!(".model.safetensors.tmp{}", std::process::id()));
    let target = dir.join("model.safetensors");
    let written = candle_core::safetensors::save(&tensors, &tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))
        .and_then(|()| readable_by_all(&tmp))
        .and_then(|()| {
            std::fs::rename(&tmp, &target).with_context(|| format!("cannot move {} into place", target.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    crate::report::atomic::write_atomic(&dir.join("config.json"), backbone.hf_config_json().as_bytes())?;
    for (name, bytes) in backbone.extra_files() {
        let path = dir.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        crate::report::atomic::write_atomic(&path, &bytes)?;
    }
    Ok(())
}

/// Gives a written checkpoint the usual 0644 mode (the safetensors writer creates 0600 files).
fn readable_by_all(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot set permissions of {}", path.display()))?;
    }
    Ok(())
}

/// A short fingerprint of the backbone's weights (FNV-1a over the f32 bytes), for run caching.
pub fn fingerprint(backbone: &Backbone) -> Result<String> {
    let tensors = hf_tensors(backbone)?;
    let mut names: Vec<_> = tensors.keys().cloned().collect();
    names.sort();
    let mut h = crate::util::Fnv64::new();
    for n in names {
        h.update(n.as_bytes());
        let v: Vec<f32> = tensors[&n].flatten_all()?.to_vec1()?;
        for x in v {
            h.update(&x.to_le_bytes());
        }
    }
    Ok(h.hex())
}
