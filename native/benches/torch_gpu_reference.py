#!/usr/bin/env python3
"""PyTorch on the GPU beside `camlime devices --check` (part of native/device-check.sh).

Tooling only: needs torch (and torchvision when present) on the GPU machine; weights are random
(throughput does not depend on them). Prints MobileNetV2 images per second at each batch size,
input already on the GPU, medians of timed runs after warm-up, in FP32, TF32 and FP16
channels-last: the same conditions as the check's "img/s dev" column.
"""

import statistics
import sys
import time

import torch


def mobilenet_v2():
    try:
        import torchvision

        return torchvision.models.mobilenet_v2(weights=None)
    except ImportError:
        return None


def images_per_second(model, batch, dtype, channels_last, runs):
    x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main():
    batches = [int(b) for b in (sys.argv[1] if len(sys.argv) > 1 else "1,256,1024").split(",")]
    model = mobilenet_v2()
    if model is None:
        print("torchvision missing: no PyTorch reference")
        return
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()}")
    torch.backends.cudnn.benchmark = True
    # How far TF32 moves PyTorch's own logits from FP32 (random weights, normal inputs): the
    # rounding any TF32 engine carries, beside the check's TF32-vs-CPU error.
    x = torch.randn(8, 3, 224, 224, device="cuda")
    m = model.to("cuda").eval()
    logits = {}
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        with torch.inference_mode():
            logits[tf32] = m(x).double()
    diff = (logits[True] - logits[False]).abs().amax(dim=1) / logits[False].abs().amax(dim=1)
    print(f"torch tf32 vs fp32 logits: max error / max logit {diff.max().item():.2e}")
    rows = []
    for name, tf32, dtype, channels_last in [
        ("fp32", False, torch.float32, False),
        ("tf32", True, torch.float32, False),
        ("fp16-cl", True, torch.float16, True),
    ]:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        m = model.to("cuda", dtype=dtype).eval()
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        for batch in batches:
            rows.append((name, batch, images_per_second(m, batch, dtype, channels_last, 20 if batch < 256 else 10)))
    print(f"{'torch':<8} {'batch':>6} {'img/s':>10}")
    for name, batch, rate in rows:
        print(f"{name:<8} {batch:>6} {rate:>10.0f}")


if __name__ == "__main__":
    main()
