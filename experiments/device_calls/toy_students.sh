# runbook 6.2 + 6.3 in one device call (needs carry/full_teacher.tgz from toy_teacher_stage2.sh): bash experiments/device_calls/toy_students.sh
source experiments/device_calls/common.sh
# Two processes share the GPU (the teacher's scores run beside the students' scores): each may take 45% of its
# memory. With the default (75% each) the second one's cuBLAS handles and autotuning failed (2026-12-06).
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}
# the stage-2 teacher: carried, or left in /tmp by toy_teacher_stage2.sh (or TEACHER_DIR) on the same warm machine
TEACHER_DIR=${TEACHER_DIR:-/tmp/run_full/best_ema}
if [ -f carry/full_teacher.tgz ]; then tar xzf carry/full_teacher.tgz -C /tmp || exit 1
elif [ "$TEACHER_DIR" = /tmp/full/best_ema ] && [ -d /tmp/full/best_ema ]; then :
elif [ -d "$TEACHER_DIR" ]; then rm -rf /tmp/full && mkdir -p /tmp/full && cp -r "$TEACHER_DIR" /tmp/full/best_ema
else echo "no teacher: carry/full_teacher.tgz or $TEACHER_DIR" >&2; exit 1; fi
sha256sum /tmp/full/best_ema/*.safetensors
W=/tmp/distill; mkdir -p $W /tmp/teacher_eval
teacher_evals() {
  # after the KD stage (its training no longer shares the GPU), or once the students' script has ended
  while [ ! -f $W/kd/student/diffusion_pytorch_model.safetensors ] && [ ! -f /tmp/students_done ]; do sleep 5; done
  for split in test validation; do
    vdit toybench /tmp/full/best_ema --setting euler_ancestral:100:4 --setting ddim:4:4 --split $split --seeds 0,1,2 \
      --json /tmp/teacher_eval/gpu_teacher_$split.json
  done
}
rm -f /tmp/students_done
teacher_evals > $OUT/teacher_eval.log 2>&1 &
EVALS=$!
timeout ${TS:-540} python3 -m experiments.reproduce_toy_students --teacher /tmp/full/best_ema --skip-shipped \
  --mlcd-time ${TC:-220} --kd-time ${TD:-100} --workdir $W --out /tmp/distill_report > $OUT/students.log 2>&1
echo "students rc=$? after $(( $(date +%s) - T0 )) s"
touch /tmp/students_done
for i in $(seq 1 ${TW:-25}); do kill -0 $EVALS 2>/dev/null || break; sleep 2; done  # up to 2*TW s more
kill $EVALS 2>/dev/null; pkill -f "toybench /tmp/full/best_ema" 2>/dev/null
echo "teacher evals: $(ls /tmp/teacher_eval) after $(( $(date +%s) - T0 )) s"
tail -3 $OUT/students.log
mkdir -p /tmp/res && cp /tmp/gpu.txt /tmp/res/ && cp -r /tmp/distill_report /tmp/teacher_eval /tmp/res/ 2>/dev/null
cp $W/*.json /tmp/res/ 2>/dev/null; cp -r $W/logs /tmp/res/ 2>/dev/null
for s in mlcd search kd; do mkdir -p /tmp/res/$s; cp $W/$s/*.json* $W/$s/*.jsonl /tmp/res/$s/ 2>/dev/null; done
tar czf $OUT/results.tgz -C /tmp res
tar czf - -C $W mlcd/student kd/student 2>/dev/null | split -b 15M - $OUT/students.tgz.part-
ls -la $OUT
