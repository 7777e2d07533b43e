//! Each encoder architecture's names in one table ([`EncoderNames`]): the checkpoint's tensor
//! names, the module names PEFT writes and reads, `target_modules` entries, the block list
//! (`layers_pattern`) and the transformers class. The PEFT layout ([`super::PeftLayout`]), the
//! adapter reader and the config checks are built from these tables alone, so a new encoder
//! brings its table (in its own file) and adds nothing here. As PEFT's
//! `utils/constants.py` keeps one list of target modules per architecture, and as a model's
//! struct tree is its name tree.

use super::TargetModule;
use std::fmt;

/// One way of naming an architecture's adaptable linear layers.
#[derive(Debug, PartialEq, Eq)]
pub struct Spelling {
    /// The block list's path inside a tower (`layers`, `encoder.layer`, `encoder.layers`).
    pub layers: &'static str,
    /// Each module's path inside a block, in [`TargetModule::ALL`] order.
    pub modules: [&'static str; 6],
}

impl Spelling {
    /// The path of `module` inside a block.
    pub fn module(&self, module: TargetModule) -> &'static str {
        self.modules[module.index()]
    }

    /// The module whose path inside a block is `path`.
    pub fn module_at(&self, path: &str) -> Option<TargetModule> {
        TargetModule::ALL.into_iter().find(|&m| self.module(m) == path)
    }

    /// The name PEFT's `layers_pattern` gives the block list (its last component).
    pub fn layers_pattern(&self) -> &'static str {
        self.layers.rsplit('.').next().unwrap_or(self.layers)
    }
}

/// Everything copra-lab needs to know about an encoder architecture's names.
pub struct EncoderNames {
    /// The transformers class copra-lab writes as `base_model_class` (`ViTModel`).
    pub class: &'static str,
    /// Classes starting with this belong to the architecture (`ViT` for `ViTForImageClassification`).
    pub class_prefix: &'static str,
    /// How to get a backbone of this architecture (for error messages).
    pub backbone_hint: &'static str,
    /// The prefix under which task-head models nest the encoder (`vit.`), accepted on read;
    /// empty when there is none.
    pub model_prefix: &'static str,
    /// The towers' module prefixes: `[""]` for one encoder, `["vision_model", "text_model"]`
    /// for CLIP (blocks are numbered globally, tower after tower).
    pub towers: &'static [&'static str],
    /// The tensor names of `model.safetensors` (`{layers}.{i}.{module}.weight`).
    pub checkpoint: Spelling,
    /// The module names adapter files use: the first is what copra-lab writes (today's
    /// transformers + PEFT), the others are read too (older transformers versions).
    pub adapter: &'static [Spelling],
    /// The `target_modules` list entry of each module, in [`TargetModule::ALL`] order.
    pub target_modules: [&'static str; 6],
}

impl EncoderNames {
    /// The spelling copra-lab writes adapters in.
    pub fn written(&self) -> &'static Spelling {
        &self.adapter[0]
    }

    /// The checkpoint path of `module` inside block `layer` of tower `tower` (`encoder.layer.3.attention.attention.query`).
    pub fn checkpoint_module(&self, tower: usize, layer: usize, module: TargetModule) -> String {
        format!("{}.{layer}.{}", self.checkpoint_layers(tower), self.checkpoint.module(module))
    }

    /// The checkpoint path of tower `tower`'s block list (`encoder.layer`, `vision_model.encoder.layers`).
    pub fn checkpoint_layers(&self, tower: usize) -> String {
        with_tower(self.towers[tower], self.checkpoint.layers)
    }

    /// The full module name under `spelling` of `module` in block `layer` of tower `tower`.
    pub fn module_name(&self, spelling: &Spelling, tower: usize, layer: usize, module: TargetModule) -> String {
        format!("{}.{layer}.{}", with_tower(self.towers[tower], spelling.layers), spelling.module(module))
    }

    /// True for a transformers class of this architecture.
    pub fn owns_class(&self, class: &str) -> bool {
        class.starts_with(self.class_prefix)
    }
}

/// `tower.path`, or `path` for an unnamed tower.
fn with_tower(tower: &str, path: &str) -> String {
    if tower.is_empty() {
        path.to_string()
    } else {
        format!("{tower}.{path}")
    }
}

impl PartialEq for EncoderNames {
    fn eq(&self, other: &Self) -> bool {
        self.class == other.class
    }
}

impl Eq for EncoderNames {}

impl fmt::Debug for EncoderNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.class)
    }
}

/// One reading of a LoRA factor's module name: the architecture and spelling it matches,
/// the tower, the block inside the tower and the module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameMatch {
    /// The architecture.
    pub names: &'static EncoderNames,
    /// The spelling (its `layers_pattern` is what a config must say).
    pub spelling: &'static Spelling,
    /// The tower's index in `names.towers`.
    pub tower: usize,
    /// The block's index inside its tower.
    pub layer: usize,
    /// The module.
    pub module: TargetModule,
}

/// Every reading of module name `body` (the name without `base_model.model.`) among
/// `architectures`: one per architecture and spelling that names it so. A name several
/// architectures share (`encoder.layer.0.intermediate.dense`, ViT and BERT) has several.
pub fn readings(body: &str, architectures: &[&'static EncoderNames]) -> Vec<NameMatch> {
    let mut out = Vec::new();
    for &names in architectures {
        let inner = match names.model_prefix {
            "" => body,
            prefix => body.strip_prefix(prefix).unwrap_or(body),
        };
        for (tower, tower_name) in names.towers.iter().enumerate() {
            let in_tower = if tower_name.is_empty() {
                Some(inner)
            } else {
                inner.strip_prefix(tower_name).and_then(|r| r.strip_prefix('.'))
            };
            let Some(in_tower) = in_tower else { continue };
            for spelling in names.adapter {
                let Some(rest) = in_tower.strip_prefix(spelling.layers).and_then(|r| r.strip_prefix('.')) else {
                    continue;
                };
                let Some((idx, path)) = rest.split_once('.') else { continue };
                if idx.is_empty() || !idx.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let (Ok(layer), Some(module)) = (idx.parse::<usize>(), spelling.module_at(path)) else { continue };
                out.push(NameMatch { names, spelling, tower, layer, module });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::checkpoint::encoder_names;

    #[test]
    fn every_architecture_reads_back_the_names_it_writes() {
        let all = encoder_names();
        for &names in &all {
            for spelling in names.adapter {
                for tower in 0..names.towers.len() {
                    for module in TargetModule::ALL {
                        let name = names.module_name(spelling, tower, 3, module);
                        let found = readings(&name, &all);
                        let own = found.iter().find(|r| r.names == names && std::ptr::eq(r.spelling, spelling));
                        let own = own.unwrap_or_else(|| panic!("{name} not read as {names:?}: {found:?}"));
                        assert_eq!((own.tower, own.layer, own.module), (tower, 3, module), "{name}");
                    }
                }
            }
        }
    }

    #[test]
    fn names_shared_by_architectures_have_every_reading() {
        let all = encoder_names();
        let classes = |body: &str| readings(body, &all).iter().map(|r| r.names.class).collect::<Vec<_>>();
        assert_eq!(classes("encoder.layer.0.intermediate.dense"), ["ViTModel", "BertModel"]);
        assert_eq!(classes("bert.encoder.layer.0.attention.self.query"), ["BertModel"]);
        assert_eq!(classes("vit.encoder.layer.0.attention.self.query"), Vec::<&str>::new());
        assert_eq!(classes("text_model.encoder.layers.1.mlp.fc2"), ["CLIPModel"]);
        assert!(classes("encoder.layer.x.attention.self.query").is_empty());
    }
}
