#!/usr/bin/env python3
"""The reference pipeline that `camlime bench` is compared with, on the same machine: lime 0.2.0.1
(`LimeImageExplainer.explain_instance`, quickshift, hide_color=0, 1000 samples, batch_size 10)
on torchvision's MobileNetV2 with the bundled weights, chelsea, the paper's preprocessing, plus
scikit-image quickshift alone. Prints one JSON object of median seconds.

    python3 native/benches/lime_reference.py [--samples 1000] [--runs 3] [--threads 2]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from lime import lime_image
from PIL import Image
from skimage.segmentation import quickshift

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "shared" / "tests" / "fixtures" / "reference"))
import generate as reference  # noqa: E402  (sha256-checked weights)

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = reference.mobilenet_v2()

    def classify(images):
        x = (images.astype(np.float32) / np.float32(255) - MEAN) / STD
        with torch.no_grad():
            logits = model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
        return torch.softmax(logits, 1).numpy()

    image = Image.open(ROOT / "models" / "samples" / "chelsea.png").convert("RGB")
    base = np.asarray(image.resize((256, 256), Image.BILINEAR))[16:240, 16:240]
    classify(base[None])
    quickshift_runs, lime_runs = [], []
    for run in range(args.runs):
        start = time.perf_counter()
        quickshift(base, kernel_size=4, max_dist=200, ratio=0.2)
        quickshift_runs.append(time.perf_counter() - start)
        explainer = lime_image.LimeImageExplainer(random_state=run)
        start = time.perf_counter()
        explainer.explain_instance(base, classify, top_labels=5, hide_color=0,
                                   num_samples=args.samples)
        lime_runs.append(time.perf_counter() - start)
    print(json.dumps({
        "machine_threads": args.threads,
        "samples": args.samples,
        "quickshift_s": float(np.median(quickshift_runs)),
        "lime_explain_instance_s": float(np.median(lime_runs)),
        "runs": args.runs,
    }))


if __name__ == "__main__":
    main()
