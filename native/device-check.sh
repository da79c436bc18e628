#!/usr/bin/env bash
# The CUDA device check (issue 19), for a GPU machine: nothing is built there. Build and strip the
# release binary on the development machine, then run this from the repository root:
#
#   cargo build --release -p camlime && mkdir -p target/device \
#     && strip -o target/device/camlime target/release/camlime
#   native/device-check.sh [target/device/camlime]
#
# Through the `device` tool the working tree travels with the binary under a 64 MiB limit, and the
# tracked files alone are ~60 MB (the models, the test fixtures): carry `xz -9e` of the binary
# (~8 MB) and unpack it there (`xz -dc target/device/camlime.xz > /tmp/camlime`), with
# shared/tests/fixtures moved out of the tree for the call (the device needs none of it).
#
# It prints the GPU, runs `camlime devices --check` (every bundled model's logits against the CPU
# engine in strict FP32 and TF32, outputs poisoned with NaN first; throughput at batch 1, 256,
# 1024), PyTorch's MobileNetV2 throughput beside it, then CamLIME (1000 samples, with
# segmentation and CAM) and Score-CAM through `camlime bench --device cuda`, and the tables last.
# About 4–6 minutes on an H200. Exit status: that of the correctness check.
set -u
bin=${1:-target/device/camlime}
out=${OUT:-$(mktemp -d)}
export CAMLIME_CACHE="$out/cache"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$bin" devices || true

timeout 300 "$bin" devices --check --batches 1,256,1024 --runs 10 >"$out/check.txt" 2>&1
check=$?
timeout 150 python3 native/benches/torch_gpu_reference.py 1,256,1024 >"$out/torch.txt" 2>&1 || true
timeout 180 "$bin" bench --device cuda --runs 3 --no-gradients >"$out/bench.txt" 2>&1 || true

echo "== camlime bench --device cuda (CamLIME 1000, Score-CAM)"
cat "$out/bench.txt"
echo "== PyTorch (input on the GPU)"
cat "$out/torch.txt"
echo "== camlime devices --check (exit $check)"
cat "$out/check.txt"
exit $check
