#!/usr/bin/env bash
# GPU check, sized for one H100 in under 8 minutes:
#   1. benchmarks.train_speed on synthetic CIFAR-shaped data: ResNet-110 and ResNet-20, memgate
#      gated (k=1, k=5) vs baseline vs the reference per-image DataLoader pipeline, eval, GPU memory;
#   2. full 50k-image epochs of `memgate train` (ResNet-110, gate over B3) on synthetic data,
#      eager and with torch.compile: epoch_time_s and images_per_s from metrics.jsonl;
#   3. 3 epochs of real training on a small CIFAR-10 subset, if benchmarks/data/cifar10_subset.npz
#      exists (make it with `python -m benchmarks.make_subset`; carry it: it is git-ignored).
# Results go to $OUT (default /tmp/gpu_check). Usage: bash benchmarks/gpu_check.sh
# Smoke test of the script itself on a CPU (tiny sizes, minutes): DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
if [ -n "${QUICK:-}" ]; then DEPTHS="20"; BATCHES=2; REPEATS=1; N_TRAIN=2000; EPOCHS=1; DEPTH=20
else DEPTHS="110 20"; BATCHES=40; REPEATS=3; N_TRAIN=50000; EPOCHS=3; DEPTH=110; fi
if ! $PY -c "import tomli_w" 2>/dev/null; then
  # The GPU image has every dependency but this small pure-Python one, and no package index.
  $PY -m pip install -q --no-index --no-deps --target "$OUT/site" benchmarks/wheels/tomli_w-*.whl
  export PYTHONPATH="$PYTHONPATH:$OUT/site"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"; } | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"

echo "== 1. speed: memgate vs reference (synthetic data)"
timeout 240 $PY -m benchmarks.train_speed --device "$DEVICE" --depth $DEPTHS --batches $BATCHES --repeats $REPEATS \
  --json "$OUT/train_speed.json" 2>&1 | tee "$OUT/train_speed.txt"

echo "== 2. full epochs through memgate train (ResNet-$DEPTH gated, $N_TRAIN synthetic images)"
$PY - "$OUT/synthetic.npz" "$N_TRAIN" <<'PYEOF'
import sys, numpy as np
rng, n = np.random.default_rng(0), int(sys.argv[2])
np.savez(sys.argv[1], x_train=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
         y_train=rng.integers(0, 10, n), x_test=rng.integers(0, 256, (10000, 32, 32, 3), dtype=np.uint8),
         y_test=rng.integers(0, 10, 10000))
PYEOF
for compile in false true; do
  timeout 200 $PY -m memgate train -c configs/gated_b3.toml model.depth=$DEPTH data.path="$OUT/synthetic.npz" \
    data.val_size=0 train.epochs=$EPOCHS train.compile=$compile device="$DEVICE" out="$OUT/epoch_compile_$compile" \
    --force 2>&1 | tail -4 | tee "$OUT/epoch_compile_$compile.txt" || echo "compile=$compile failed"
done

if [ -f benchmarks/data/cifar10_subset.npz ]; then
  echo "== 3. real training, CIFAR-10 subset, 3 epochs"
  timeout 120 $PY -m memgate train -c configs/gated_b3.toml data.path=benchmarks/data/cifar10_subset.npz \
    data.val_size=1000 train.epochs=3 device="$DEVICE" out="$OUT/real" --force 2>&1 | tail -5 | tee "$OUT/real.txt"
fi
echo "done: $OUT"
