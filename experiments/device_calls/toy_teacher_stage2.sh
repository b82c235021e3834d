# runbook 6.1, stage 2 of the toy teacher, in one device call: TL=530 bash experiments/device_calls/toy_teacher_stage2.sh
# STEPS (default 16466, the shipped recipe's) and EXTRA (more train-teacher flags) make the variants of item 6, e.g.
#   STEPS=18000 EXTRA="--lr-schedule cosine --final-lr-fraction 0.1 --check-seeds 3" TL=530 bash ...
# The stage-1 export it starts from left the tree once both stage-2 runs had used it; restore it first with
#   git checkout f655a42 -- experiments/checkpoints/toy_teacher_stage1_sign_2026-12-06
source experiments/device_calls/common.sh
if ls carry/run_full.tgz.part-* >/dev/null 2>&1; then cat carry/run_full.tgz.part-* | tar xzf - -C /tmp; echo "restored /tmp/run_full"; fi
TL=${TL:-530}
STEPS=${STEPS:-16466}
echo "stage 2 start $(date -u +%H:%M:%S) TL=$TL STEPS=$STEPS EXTRA=$EXTRA"
timeout $((TL+45)) bash -c "$(declare -f vdit); vdit train-teacher --world toy-9x24x24-subframe \
  --init-from experiments/checkpoints/toy_teacher_stage1_sign_2026-12-06 --adapt-to-world \
  --mix-world toy-sign-9x24x24-subframe --mix-fraction 0.25 --steps $STEPS --check-every 1500 --run /tmp/run_full \
  --time-limit $TL $EXTRA" > $OUT/train_stage2.log 2>&1
echo "rc=$? after $(( $(date +%s) - T0 )) s"
tail -3 $OUT/train_stage2.log
source experiments/device_calls/bring_back.sh
bring_back_teacher_run /tmp/run_full $STEPS stage2
ls -la $OUT
