#!/usr/bin/env python3
"""Seeds for the `onnx_model` fuzz target: small classifiers that load all the way.

The architecture fixtures (weightless graphs with two outputs) stop at the output check, so the
fuzzer needs models `Classifier::new` accepts whole to mutate from: weights present, one logits
output, the operators of the bundled CNNs. Run from the repository root with onnx and numpy
(`python3 fuzz/onnx_seeds.py`); the weights come from a fixed seed, so the files are rewritten byte
for byte.

- `corpus/onnx_model/tiny_mobilenet.onnx`: a MobileNetV2 stem and inverted residual (Conv,
  BatchNormalization, Clip as ReLU6, a depthwise Conv, Add), then GlobalAveragePool, Flatten and
  Gemm; input 1x3x224x224 (batch dynamic).
- `corpus/onnx_model/tiny_vgg.onnx`: Conv, Relu, MaxPool, AveragePool, Reshape and MatMul + Add
  for the head; input fixed at 1x3x224x224.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parent / "corpus" / "onnx_model"
RNG = np.random.default_rng(21)


def weight(name, *shape, scale=0.3):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def batch_norm(name, x, channels, nodes, inits):
    inits += [weight(f"{name}.weight", channels), weight(f"{name}.bias", channels),
              weight(f"{name}.running_mean", channels, scale=0.1),
              numpy_helper.from_array(np.linspace(0.5, 1.5, channels, dtype=np.float32),
                                      f"{name}.running_var")]
    nodes.append(helper.make_node(
        "BatchNormalization",
        [x, f"{name}.weight", f"{name}.bias", f"{name}.running_mean", f"{name}.running_var"],
        [name], epsilon=1e-5))
    return name


def relu6(name, x, nodes):
    nodes.append(helper.make_node("Clip", [x, "zero", "six"], [name]))
    return name


def tiny_mobilenet():
    nodes, inits = [], [numpy_helper.from_array(np.array(0, np.float32), "zero"),
                        numpy_helper.from_array(np.array(6, np.float32), "six")]
    inits.append(weight("features.0.conv.weight", 8, 3, 3, 3))
    nodes.append(helper.make_node("Conv", ["input", "features.0.conv.weight"], ["features.0.conv"],
                                  kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x = relu6("features.0", batch_norm("features.0.bn", "features.0.conv", 8, nodes, inits), nodes)
    inits.append(weight("features.1.dw.weight", 8, 1, 3, 3))
    nodes.append(helper.make_node("Conv", [x, "features.1.dw.weight"], ["features.1.dw"],
                                  kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=8))
    y = relu6("features.1.dw.relu", batch_norm("features.1.dw.bn", "features.1.dw", 8, nodes, inits),
              nodes)
    inits.append(weight("features.1.pw.weight", 8, 8, 1, 1))
    nodes.append(helper.make_node("Conv", [y, "features.1.pw.weight"], ["features.1.pw"],
                                  kernel_shape=[1, 1]))
    y = batch_norm("features.1.pw.bn", "features.1.pw", 8, nodes, inits)
    nodes.append(helper.make_node("Add", [x, y], ["features.1"]))
    nodes.append(helper.make_node("GlobalAveragePool", ["features.1"], ["pool"]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], axis=1))
    inits += [weight("classifier.weight", 10, 8), weight("classifier.bias", 10)]
    nodes.append(helper.make_node("Gemm", ["flat", "classifier.weight", "classifier.bias"],
                                  ["logits"], transB=1))
    return helper.make_graph(
        nodes, "tiny_mobilenet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)


def tiny_vgg():
    nodes, inits = [], []
    inits += [weight("features.0.weight", 6, 3, 3, 3), weight("features.0.bias", 6)]
    nodes.append(helper.make_node("Conv", ["input", "features.0.weight", "features.0.bias"],
                                  ["features.0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Relu", ["features.0"], ["features.1"]))
    nodes.append(helper.make_node("MaxPool", ["features.1"], ["features.2"], kernel_shape=[4, 4],
                                  strides=[4, 4]))
    inits += [weight("features.3.weight", 6, 6, 3, 3), weight("features.3.bias", 6)]
    nodes.append(helper.make_node("Conv", ["features.2", "features.3.weight", "features.3.bias"],
                                  ["features.3"], kernel_shape=[3, 3], strides=[2, 2],
                                  pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Relu", ["features.3"], ["features.4"]))
    nodes.append(helper.make_node("AveragePool", ["features.4"], ["avgpool"], kernel_shape=[28, 28],
                                  strides=[28, 28]))
    inits.append(numpy_helper.from_array(np.array([1, 6], np.int64), "flat_shape"))
    nodes.append(helper.make_node("Reshape", ["avgpool", "flat_shape"], ["flat"]))
    inits += [weight("classifier.weight", 6, 5), weight("classifier.bias", 5)]
    nodes.append(helper.make_node("MatMul", ["flat", "classifier.weight"], ["matmul"]))
    nodes.append(helper.make_node("Add", ["matmul", "classifier.bias"], ["logits"]))
    return helper.make_graph(
        nodes, "tiny_vgg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])], inits)


def main():
    for name, graph in [("tiny_mobilenet", tiny_mobilenet()), ("tiny_vgg", tiny_vgg())]:
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                  producer_name="camlime fuzz/onnx_seeds.py")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        path = OUT / f"{name}.onnx"
        onnx.save(model, str(path))
        print(path, path.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
