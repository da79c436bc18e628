#!/usr/bin/env python3
"""Time Quantus 0.5.3 on MobileNetV2 for one image, to compare with `camlime eval`.

Run from the repository root with torch, torchvision, grad-cam, quantus 0.5.3 and numpy < 2.4:

    python3 native/benches/metrics_reference.py [--image models/samples/chelsea.png]
        [--pixel-flipping] [--threads 2]

It explains the image with pytorch-grad-cam's Grad-CAM on features.17 (the attribution the
metrics score; their cost hardly depends on it), then times each metric of the paper preset
with the paper's settings (the same as `camlime eval --metrics paper`) and, with
`--pixel-flipping`, PixelFlipping at Quantus's defaults (one model call per pixel: 50,176
calls) or with `--pixel-flipping-step N` pixels per call. Prints one JSON line per metric.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torchvision import transforms

import quantus

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "shared/tests/fixtures/reference"))
import generate as reference  # noqa: E402

PAPER = [
    ("FaithfulnessCorrelation", {"nr_runs": 100, "subset_size": 224, "perturb_baseline": "black"}),
    ("FaithfulnessEstimate", {"features_in_step": 224, "perturb_baseline": "black"}),
    ("MonotonicityCorrelation", {"features_in_step": 3136, "nr_samples": 10}),
    ("IROF", {}),
    ("RegionPerturbation", {"patch_size": 14, "perturb_baseline": "uniform", "order": "morf"}),
    ("Sparseness", {}),
    ("Complexity", {}),
    ("EffectiveComplexity", {"eps": 1e-5}),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", default=str(ROOT / "models/samples/chelsea.png"))
    parser.add_argument("--pixel-flipping", action="store_true")
    parser.add_argument("--pixel-flipping-step", type=int, default=1,
                        help="features_in_step of PixelFlipping (Quantus's default: 1)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = reference.mobilenet_v2()
    transform = transforms.Compose([
        transforms.Resize((256, 256)), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    x = transform(Image.open(args.image).convert("RGB"))[None]
    with torch.no_grad():
        y = int(model(x).argmax())
    a = GradCAM(model=model, target_layers=[model.features[17]])(
        input_tensor=x, targets=[ClassifierOutputTarget(y)])
    x_batch, y_batch, a_batch = x.numpy(), np.array([y]), a[:, None].astype(np.float32)
    cases = list(PAPER)
    if args.pixel_flipping:
        cases.append(("PixelFlipping", {"features_in_step": args.pixel_flipping_step}))
    total = 0.0
    for name, params in cases:
        metric = getattr(quantus, name)(**params, disable_warnings=True)
        np.random.seed(0)
        start = time.perf_counter()
        metric(model=model, x_batch=x_batch, y_batch=y_batch, a_batch=a_batch, device="cpu")
        seconds = time.perf_counter() - start
        if name != "PixelFlipping":
            total += seconds
        print(json.dumps({"metric": name, "seconds": round(seconds, 3)}), flush=True)
    print(json.dumps({"metric": "paper preset", "seconds": round(total, 3)}), flush=True)


if __name__ == "__main__":
    main()
