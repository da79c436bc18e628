#!/usr/bin/env python3
"""onnxruntime on the bundled models, for comparison with `cargo bench --bench inference`.

Tooling only (pip install onnxruntime numpy); run from the repository root:
`python3 native/benches/onnxruntime_reference.py`. Prints the median ms per image over 30 runs
after 5 warm-up runs, for batch 1, 16 and 64, one thread and every core.
"""

import os
import statistics
import time

import numpy as np
import onnxruntime as ort


def per_image_ms(session, batch):
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    for _ in range(5):
        session.run(["logits"], {"input": x})
    times = []
    for _ in range(30 if batch == 1 else 8 if batch == 16 else 3):
        start = time.perf_counter()
        session.run(["logits"], {"input": x})
        times.append((time.perf_counter() - start) * 1000 / batch)
    return statistics.median(times)


def main():
    cores = os.cpu_count()
    print(f"onnxruntime {ort.__version__}, {cores} cores")
    for model in ["mobilenet_v2", "efficientnet_lite0"]:
        for threads in sorted({1, cores}):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(f"models/{model}.onnx", options, providers=["CPUExecutionProvider"])
            for batch in [1, 16, 64]:
                print(f"{model:20} threads {threads} batch {batch:2}: {per_image_ms(session, batch):6.2f} ms/img")


if __name__ == "__main__":
    main()
