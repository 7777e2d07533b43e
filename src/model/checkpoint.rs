//! Reading and writing backbones in the Hugging Face layout: a directory with
//! `config.json` and `model.safetensors` under `ViTModel`'s weight names, so
//! that `ViTModel.from_pretrained(dir)` loads ours and we load theirs.

use super::config::VitConfig;
use super::vit::{module_index, module_shape, Backbone, BlockWeights, LinearWeights};
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
    from_tensors(&config, tensors, "built-in backbone")
}

/// Loads `builtin` or a Hugging Face model directory (`config.json` + `model.safetensors`).
pub fn load_backbone(spec: &str, device: &Device) -> Result<Backbone> {
    if spec == BUILTIN_NAME {
        return load_builtin(device);
    }
    load_dir(Path::new(spec), device)
}

/// Loads a Hugging Face `ViTModel` (or `ViTForImageClassification`) directory.
pub fn load_dir(dir: &Path, device: &Device) -> Result<Backbone> {
    if !dir.is_dir() {
        bail!("backbone directory {} does not exist: pass a folder holding config.json and model.safetensors, or 'builtin'", dir.display());
    }
    let config = VitConfig::load(&dir.join("config.json"))?;
    let weights = dir.join("model.safetensors");
    if !weights.is_file() {
        bail!(
            "{} is missing: the backbone folder needs model.safetensors (save_pretrained writes it)",
            weights.display()
        );
    }
    let tensors = candle_core::safetensors::load(&weights, device).map_err(|e| {
        anyhow!(
            "{} is not a valid safetensors file ({e}): it may be truncated or corrupt; re-export it",
            weights.display()
        )
    })?;
    from_tensors(&config, tensors, &weights.display().to_string())
}

fn from_tensors(config: &VitConfig, mut tensors: HashMap<String, Tensor>, origin: &str) -> Result<Backbone> {
    // ViTForImageClassification prefixes the backbone with "vit."
    if !tensors.contains_key("embeddings.cls_token") && tensors.contains_key("vit.embeddings.cls_token") {
        tensors = tensors.into_iter().filter_map(|(k, v)| k.strip_prefix("vit.").map(|s| (s.to_string(), v))).collect();
    }
    let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
        let t = tensors
            .remove(name)
            .ok_or_else(|| anyhow!("{origin}: tensor '{name}' is missing: this is not a ViTModel checkpoint"))?;
        if t.dims() != shape {
            bail!(
                "{origin}: tensor '{name}' has shape {:?} but config.json implies {:?}: checkpoint and config.json do not match",
                t.dims(),
                shape
            );
        }
        Ok(t.to_dtype(candle_core::DType::F32)?)
    };
    let d = config.hidden_size;
    let (c, p) = (config.num_channels, config.patch_size);
    let cls_token = take("embeddings.cls_token", &[1, 1, d])?;
    let position_embeddings = take("embeddings.position_embeddings", &[1, config.num_tokens(), d])?;
    let patch_weight = take("embeddings.patch_embeddings.projection.weight", &[d, c, p, p])?.reshape((d, c * p * p))?;
    let patch_bias = take("embeddings.patch_embeddings.projection.bias", &[d])?;
    let mut blocks = Vec::new();
    for i in 0..config.num_hidden_layers {
        let pre = format!("encoder.layer.{i}");
        let mut linears = Vec::new();
        for module in TargetModule::ALL {
            let (o, inp) = module_shape(config, module);
            let name = format!("{pre}.{}", module.hf_prefix());
            let weight = take(&format!("{name}.weight"), &[o, inp])?;
            let bias_name = format!("{name}.bias");
            let has_bias =
                config.qkv_bias || !matches!(module, TargetModule::Query | TargetModule::Key | TargetModule::Value);
            let bias = if has_bias { Some(take(&bias_name, &[o])?) } else { None };
            linears.push(LinearWeights { weight, bias });
        }
        debug_assert_eq!(linears.len(), TargetModule::ALL.len());
        let ln_before = (
            take(&format!("{pre}.layernorm_before.weight"), &[d])?,
            take(&format!("{pre}.layernorm_before.bias"), &[d])?,
        );
        let ln_after = (
            take(&format!("{pre}.layernorm_after.weight"), &[d])?,
            take(&format!("{pre}.layernorm_after.bias"), &[d])?,
        );
        blocks.push(BlockWeights { ln_before, ln_after, linears });
    }
    let final_ln = (take("layernorm.weight", &[d])?, take("layernorm.bias", &[d])?);
    if let Some(extra) = tensors.keys().find(|k| k.starts_with("encoder.layer.")) {
        bail!("{origin}: unexpected tensor '{extra}': the checkpoint has more blocks than config.json's num_hidden_layers");
    }
    Ok(Backbone { config: config.clone(), cls_token, position_embeddings, patch_weight, patch_bias, blocks, final_ln })
}

/// The backbone's tensors under Hugging Face `ViTModel` names.
pub fn hf_tensors(backbone: &Backbone) -> Result<HashMap<String, Tensor>> {
    let cfg = &backbone.config;
    let mut out = HashMap::new();
    out.insert("embeddings.cls_token".to_string(), backbone.cls_token.clone());
    out.insert("embeddings.position_embeddings".to_string(), backbone.position_embeddings.clone());
    out.insert(
        "embeddings.patch_embeddings.projection.weight".to_string(),
        backbone.patch_weight.reshape((cfg.hidden_size, cfg.num_channels, cfg.patch_size, cfg.patch_size))?,
    );
    out.insert("embeddings.patch_embeddings.projection.bias".to_string(), backbone.patch_bias.clone());
    for (i, b) in backbone.blocks.iter().enumerate() {
        let pre = format!("encoder.layer.{i}");
        for module in TargetModule::ALL {
            let lw = &b.linears[module_index(module)];
            out.insert(format!("{pre}.{}.weight", module.hf_prefix()), lw.weight.clone());
            if let Some(bias) = &lw.bias {
                out.insert(format!("{pre}.{}.bias", module.hf_prefix()), bias.clone());
            }
        }
        out.insert(format!("{pre}.layernorm_before.weight"), b.ln_before.0.clone());
        out.insert(format!("{pre}.layernorm_before.bias"), b.ln_before.1.clone());
        out.insert(format!("{pre}.layernorm_after.weight"), b.ln_after.0.clone());
        out.insert(format!("{pre}.layernorm_after.bias"), b.ln_after.1.clone());
    }
    out.insert("layernorm.weight".to_string(), backbone.final_ln.0.clone());
    out.insert("layernorm.bias".to_string(), backbone.final_ln.1.clone());
    Ok(out)
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
    crate::report::atomic::write_atomic(&dir.join("config.json"), backbone.config.to_hf_json().as_bytes())?;
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
