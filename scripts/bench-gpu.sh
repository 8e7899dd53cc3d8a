#!/usr/bin/env bash
# GPU figures in one go, for a machine with an NVIDIA GPU and driver: builds train-native with
# the cuda feature (release; no CUDA toolkit needed, the driver is loaded at run time) unless
# BIN names a binary built that way, then times the MIMIC fine-tuning step and the MAE step of
# ViT-Ti/16, ViT-S/16 and ViT-B/16 at 224 px, and inference, in f32 and in mixed precision
# (`--precision bf16`: bf16 matrix products, f32 weights, norms and losses), and writes
#   <out>/bench.jsonl   one `train-native bench --json` line per model and precision
#   <out>/summary.md    images/s and model FLOP utilisation (MFU) per step
# MFU counts the matmul FLOPs of the step (forward x 3 for forward + backward; the MIMIC step
# runs two views per image; the MAE encoder sees a quarter of the patches, its decoder all of
# them) against the GPU's dense peak for the precision: PEAK_TFLOPS for f32 (H200 / H100 SXM:
# about 67; A100: 19.5) and PEAK_BF16_TFLOPS for bf16 tensor cores (H200 / H100 SXM: about
# 989; A100: 312).
#
#   scripts/bench-gpu.sh [out dir]       env: BIN, DEVICE (cuda), BATCH (64), STEPS (10),
#                                             PEAK_TFLOPS (67), PEAK_BF16_TFLOPS (989),
#                                             PRECISIONS ("f32 bf16"), MODELS (the three above)
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-runs/bench-gpu}"
device="${DEVICE:-cuda}"
batch="${BATCH:-64}"
steps="${STEPS:-10}"
peak="${PEAK_TFLOPS:-67}"
peak_bf16="${PEAK_BF16_TFLOPS:-989}"
precisions="${PRECISIONS:-f32 bf16}"
models="${MODELS:-vit_tiny_patch16_224 vit_small_patch16_224 vit_base_patch16_224}"

if [ -z "${BIN:-}" ]; then
    echo "bench-gpu: building train-native --release --features cuda"
    cargo build --release -p train-native --features cuda
    BIN="${CARGO_TARGET_DIR:-target}/release/train-native"
fi
mkdir -p "$out"
: > "$out/bench.jsonl"

for model in $models; do
    for precision in $precisions; do
        echo "bench-gpu: $model, batch $batch, $steps steps on $device in $precision"
        "$BIN" bench --model "$model" --batch "$batch" --steps "$steps" --warmup 3 \
            --only forward,mimic,mae --device "$device" --precision "$precision" --json \
            | tail -n 1 >> "$out/bench.jsonl"
    done
done

# GFLOPs per image of a ViT forward pass over `n` tokens of width `d` with `depth` blocks
# (MLP ratio 4): per block 24 n d^2 (qkv, projection, MLP) + 4 n^2 d (scores and weighted sum).
awk -v peak="$peak" -v peak_bf16="$peak_bf16" '
function vit(n, d, depth) { return depth * (24 * n * d * d + 4 * n * n * d) / 1e9 }
function num(key,   m) {
    if (match($0, "\"" key "\":\\{\"images_per_s\":[0-9.eE+-]+")) {
        m = substr($0, RSTART, RLENGTH); sub(/.*:/, "", m); return m + 0
    }
    return 0
}
BEGIN {
    print "| model | precision | step | images/s | GFLOP per image | TFLOP/s | MFU |"
    print "|---|---|---|---:|---:|---:|---:|"
}
{
    match($0, /"model":"[^"]+"/); model = substr($0, RSTART + 9, RLENGTH - 10)
    prec = "f32"
    if (match($0, /"precision":"[^"]+"/)) prec = substr($0, RSTART + 13, RLENGTH - 14)
    top = prec == "bf16" ? peak_bf16 : peak
    d = model ~ /tiny/ ? 192 : model ~ /small/ ? 384 : model ~ /base/ ? 768 : 1024
    depth = model ~ /large/ ? 24 : 12
    n = 197; patch_flops = 196 * 2 * 768 * d / 1e9
    fwd = vit(n, d, depth) + patch_flops
    # MAE: encoder on 49 kept patches + cls, decoder (512 wide, 8 blocks) on all 197 tokens.
    mae = vit(50, d, depth) + 49 * 2 * 768 * d / 1e9 + vit(197, 512, 8)
    split("forward|mimic step|mae step", steps, "|")
    flops["forward"] = fwd; flops["mimic step"] = 2 * 3 * fwd; flops["mae step"] = 3 * mae
    for (i = 1; i <= 3; i++) {
        s = steps[i]; ips = num(s)
        if (ips == 0) continue
        tf = ips * flops[s] / 1e3
        printf "| %s | %s | %s | %.1f | %.2f | %.2f | %.1f %% of %s |\n",
            model, prec, s, ips, flops[s], tf, 100 * tf / top, top
    }
}' "$out/bench.jsonl" | tee "$out/summary.md"
echo "bench-gpu: wrote $out/bench.jsonl and $out/summary.md"
