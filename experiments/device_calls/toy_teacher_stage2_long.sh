# Stage 2 of the toy teacher, the longer run (32,932 steps at the constant learning rate), resumed from a run
# The stage-1 export it starts from left the tree once both stage-2 runs had used it; restore it first with
#   git checkout f655a42 -- experiments/checkpoints/toy_teacher_stage1_sign_2026-12-06
# folder brought back in parts (carry/run_long/run_long.tgz.part-* and their SHA256SUMS; 62 MB, more than one call
# carries beside the tree). The parts travel over two calls on one warm machine and gather in /tmp:
#   KEEP=experiments/checkpoints/toy_teacher_stage1_sign_2026-12-06/diffusion_pytorch_model.safetensors \
#       bash experiments/device_calls/stash_large_files.sh out
#   call A, carry .whl, carry/run_long/SHA256SUMS and parts aa ab ac:
#       PARTS_ONLY=1 bash experiments/device_calls/toy_teacher_stage2_long.sh
#   call B, carry .whl, carry/run_long/SHA256SUMS and parts ad ae:
#       TL=330 bash experiments/device_calls/toy_teacher_stage2_long.sh
#   bash experiments/device_calls/stash_large_files.sh back
# Call B resumes the run (the stage-1 export is its --init-from), and when it reaches the last step leaves the best
# EMA teacher in /tmp/full/best_ema for toy_students.sh (TEACHER_DIR=/tmp/full/best_ema) and returns it as
# full_teacher.tgz; otherwise it returns the run folder's newest checkpoint in parts, as toy_teacher_stage2.sh does.
source experiments/device_calls/common.sh
P=/tmp/run_long_parts; mkdir -p $P
cp carry/run_long/run_long.tgz.part-* carry/run_long/SHA256SUMS $P/ 2>/dev/null
echo "parts here: $(cd $P && ls run_long.tgz.part-* | tr '\n' ' ')"
if [ ! -d /tmp/run_long/checkpoints ]; then
  if ! (cd $P && sha256sum -c --quiet SHA256SUMS >/dev/null 2>&1); then
    echo "run folder incomplete: carry the other parts in the next call"; [ -n "$PARTS_ONLY" ] && exit 0; exit 1
  fi
  cat $P/run_long.tgz.part-* | tar xzf - -C /tmp && echo "restored /tmp/run_long at step $(ls /tmp/run_long/checkpoints)"
fi
[ -n "$PARTS_ONLY" ] && exit 0
TL=${TL:-330}
timeout $((TL+45)) bash -c "$(declare -f vdit); vdit train-teacher --world toy-9x24x24-subframe \
  --init-from experiments/checkpoints/toy_teacher_stage1_sign_2026-12-06 --adapt-to-world \
  --mix-world toy-sign-9x24x24-subframe --mix-fraction 0.25 --steps 32932 --check-every 3000 --run /tmp/run_long \
  --time-limit $TL" > $OUT/train_stage2_long.log 2>&1
echo "rc=$? after $(( $(date +%s) - T0 )) s"
grep -v "^train:" $OUT/train_stage2_long.log | tail -3
source experiments/device_calls/bring_back.sh
bring_back_teacher_run /tmp/run_long 32932 stage2_long
ls -la $OUT
