#!/bin/bash
# arm.sh NAME INIT CORE
cd /work/main && . .venv/bin/activate
export TQDM_MININTERVAL=60 PYTHONUNBUFFERED=1
R=/work/runs_main/curr
start=$(date +%s)
taskset -c $3 python experiments/train_toy_teacher.py --world toy-tiny-5x16x16-subframe --model toy-sign --compute-dtype float32 \
  --batch 16 --samples 40000 --lr 3e-4 --warmup 200 --steps 100000 --check-every 1500 --check-steps 50 --eval-prompts 32 \
  --guidance 4.0 --quick-eval --export last --time-limit 2880 --adapt-to-world --init-from $2 \
  --run $R/run_$1 --out $R/out_$1 > $R/log_$1.txt 2>&1
echo "rc=$? wall=$(( $(date +%s)-start ))" > $R/$1.done
