# A cool-down stage for the toy teacher (docs/gpu_runbook.md item 6), one device call of about 250 s on an H100:
# from the long stage 2's step-21,000 EMA kept in experiments/checkpoints/, 6,000 steps on the stage-2 worlds at
# 1e-4 with a cosine decay to 0, validation checks every 1,500 steps choosing the best EMA. Then, on the same warm
# machine: TEACHER_DIR=/tmp/full/best_ema bash experiments/device_calls/toy_students.sh (TS=540).
# No stash needed: the tree plus .whl fits the call.
# Ran 2026-12-06 (experiments/results/toy_splits/retrained_cooldown_h100_2026-12-06/); INIT has left the tree since:
# git checkout 0d3f4d5 -- experiments/checkpoints/toy_teacher_stage2_long_step21000_2026-12-06 before a rerun.
source experiments/device_calls/common.sh
INIT=experiments/checkpoints/toy_teacher_stage2_long_step21000_2026-12-06
STEPS=${STEPS:-6000}
TL=${TL:-420}
sha256sum $INIT/diffusion_pytorch_model.safetensors
timeout $((TL+45)) bash -c "$(declare -f vdit); vdit train-teacher --world toy-9x24x24-subframe --init-from $INIT \
  --mix-world toy-sign-9x24x24-subframe --mix-fraction 0.25 --lr 1e-4 --warmup 300 --lr-schedule cosine \
  --steps $STEPS --check-every 1500 --run /tmp/run_cool --time-limit $TL" > $OUT/train_cooldown.log 2>&1
echo "rc=$? after $(( $(date +%s) - T0 )) s"
grep -v "^train:" $OUT/train_cooldown.log | tail -3
source experiments/device_calls/bring_back.sh
bring_back_teacher_run /tmp/run_cool $STEPS cooldown
ls -la $OUT
