#!/usr/bin/env bash
# Second device call: physics check of generation; training without and with torch.compile.
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
python -m scaletrain bench gen --batch-size 8192 --iters 5 --warmup 2 --no-compile \
  --physics 2048 --json "$OUT/gen_nocompile.json" > "$OUT/gen_nocompile.log" 2>&1
python -m scaletrain bench train --batch-size 2048,4096 --no-compile --iters 5 --warmup 2 \
  --loss-check 40 --loss-check-batch 256 --json "$OUT/train_nocompile.json" \
  > "$OUT/train_nocompile.log" 2>&1
python -m scaletrain bench train --batch-size 2048 --iters 8 --warmup 2 \
  --json "$OUT/train_compile.json" > "$OUT/train_compile.log" 2>&1
