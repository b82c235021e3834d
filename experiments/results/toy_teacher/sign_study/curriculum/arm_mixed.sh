#!/bin/bash
# the CPU curriculum arm "from_subframe" (arm.sh), with 25% of each batch from the sign world; core $1
cd /work/main && . .venv/bin/activate
export TQDM_MININTERVAL=60 PYTHONUNBUFFERED=1
R=/work/runs_s9
start=$(date +%s)
taskset -c $1 python experiments/train_toy_teacher.py --world toy-tiny-5x16x16-subframe --model toy-sign --compute-dtype float32 \
  --batch 16 --samples 40000 --lr 3e-4 --warmup 200 --steps 4800 --check-every 1500 --check-steps 50 --eval-prompts 32 \
  --guidance 4.0 --quick-eval --export last --adapt-to-world \
  --init-from /work/main/experiments/results/toy_teacher/sign_study/subframe/toy_teacher \
  --mix-world toy-sign-5x16x16-subframe --mix-fraction 0.25 \
  --run $R/run_mix --out $R/out_mix > $R/log_mix.txt 2>&1
echo "rc=$? wall=$(( $(date +%s)-start ))" > $R/mix.done
