# Sourced by the toy-teacher device calls: what comes back from a `vdit train-teacher --run RUN` call.
#   bring_back_teacher_run RUN LAST_STEP TAG
# puts into $OUT record_TAG.tgz (metrics, evals, train config and /tmp/gpu.txt), then
# - when the run's metrics reached LAST_STEP and it has best_ema/: full_teacher.tgz, with the teacher left in
#   $FULL_DIR/best_ema (default /tmp/full) for toy_students.sh on the same machine;
# - otherwise the run folder with only its newest checkpoint (a run keeps two: 112 MB for the toy teacher) as
#   NAME.tgz.part-* (15 MB parts, NAME = the run folder's name); untar them over /tmp and rerun the same command.
bring_back_teacher_run() {
  local run=$1 last=$2 tag=$3 rec=${REC_DIR:-/tmp/rec} full=${FULL_DIR:-/tmp/full}
  local name parent newest
  name=$(basename "$run"); parent=$(dirname "$run")
  rm -rf "$rec" && mkdir -p "$rec"
  cp /tmp/gpu.txt "$run/metrics.jsonl" "$run/evals.jsonl" "$run/train_config.json" "$rec/" 2>/dev/null
  tar czf "$OUT/record_$tag.tgz" -C "$(dirname "$rec")" "$(basename "$rec")"
  if grep -q "\"step\": $last[,}]" "$run/metrics.jsonl" 2>/dev/null && [ -d "$run/best_ema" ]; then
    rm -rf "$full" && mkdir -p "$full" && cp -r "$run/best_ema" "$full/" \
      && tar czf "$OUT/full_teacher.tgz" -C "$(dirname "$full")" "$(basename "$full")"
    sha256sum "$full"/best_ema/*.safetensors
  else
    newest=$(ls "$run/checkpoints" | grep -E '^[0-9]+$' | sort -n | tail -1)
    (cd "$parent" && tar czf - $(find "$name" -mindepth 1 -maxdepth 1 ! -name checkpoints) "$name/checkpoints/$newest") \
      | split -b 15M - "$OUT/$name.tgz.part-"
  fi
}
