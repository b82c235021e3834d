# Issue 19, one device call (up to LIMIT=570 s): `vdit sample` of the 29x720p 4-step 1:7 student, cold then warm,
# from this tree and from a baseline tree (another commit's checkout) on the same inputs
# (`bench_first_video --cli --baseline-tree`); then the PyTorch release's time to its first step
# (`bench_torch_release`). RESERIALIZE=1 first runs `experiments.studies.reserialize_cached_executable`; TEACHER=1
# adds the dense teacher's command, VARIANT="NAME=ARGS;..." other variants of this tree's; FULL93=1 the 93x720p 3:21
# student's command (VARIANT93="NAME=ARGS;..." variants of it); CLI_TIMEOUT=S the seconds one `vdit sample` may run (killed
# past it, recorded as timed out, the other runs go on); HOST_STUDIES=1 first times the CLI's imports and the mp4 presets on the host; then, in the time
# left, the loader's grouping against one group per tensor (`bench_load`). SERVER=N: after this tree's cold and
# warm commands, `vdit serve` on their cache and N `vdit sample --server` commands of the same job.
# Random weights.
# Carried, all ignored by git (see README.md here):
#   .whl, .whl_av (PyAV), BASE (default carry/base_tree: `git archive COMMIT jax_vdit pallas_kernels convert
#   experiments/__init__.py experiments/child_env.py pyproject.toml | tar -x -C carry/base_tree`),
#   carry/osp_v120 (`bench_torch_release --extract`), carry/relwhl (diffusers 0.28.0, huggingface_hub 0.25.2 wheels)
#   bash experiments/device_calls/stash_large_files.sh out   # first: the tree and the wheels must fit 64 MiB
source experiments/device_calls/common.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site_av .whl_av/*.whl \
  && export PYTHONPATH=/tmp/site_av:$PYTHONPATH
python3 -c "import av; print('av', av.__version__)" || { echo "no PyAV: carry .whl_av" >&2; exit 1; }
if [ "${RESERIALIZE:-0}" = 1 ]; then  # does an executable read from JAX's cache serialize again? (about 20 s)
  timeout 120 python3 -m experiments.studies.reserialize_cached_executable --out $OUT > /dev/null 2>&1
  echo "reserialize rc=$? after $(( $(date +%s) - T0 )) s"
fi
if [ "${HOST_STUDIES:-0}" = 1 ]; then  # the host's own costs: Python's imports before `vdit`'s main, mp4 presets
  for i in 1 2 3; do  # a fresh interpreter importing the CLI (what runs before main), and Python alone
    a=$(date +%s.%N); python3 -c "import jax_vdit.cli"; b=$(date +%s.%N); python3 -c "pass"; c=$(date +%s.%N)
    echo "import jax_vdit.cli: $(awk "BEGIN{print $b - $a}") s; python3 -c pass: $(awk "BEGIN{print $c - $b}") s"
  done > $OUT/import_time.txt 2>&1
  python3 -X importtime -c "import jax_vdit.cli" 2> $OUT/importtime_cli.txt
  timeout 90 python3 -m experiments.studies.mp4_preset --out $OUT/mp4_preset --runs 3 \
    --device "$(head -2 /tmp/gpu.txt | tail -1 | cut -d, -f1) host, $(nproc) CPU cores" > $OUT/mp4_preset.log 2>&1
  echo "host studies after $(( $(date +%s) - T0 )) s"
fi
BASE=${BASE-carry/base_tree}  # BASE= (empty): no baseline run
# TEACHER=1: also the dense teacher's command (Euler-ancestral with CFG, TEACHER_STEPS=10) on the same folder
STEPS10=${TEACHER_STEPS:-10}
TEACHER_VARIANT="teacher$STEPS10=--force --sampler euler_ancestral --steps $STEPS10 --guidance 7.5 --attention dense"
VARIANT_ARGS=()
if [ "${TEACHER:-0}" = 1 ]; then VARIANT_ARGS+=(--cli-variant "$TEACHER_VARIANT"); fi
IFS=';' read -ra MORE <<< "${VARIANT:-}"  # NAME=ARGS[;NAME=ARGS...]: this tree's command with other arguments
for v in "${MORE[@]}"; do VARIANT_ARGS+=(--cli-variant "$v"); done
timeout ${TA:-260} python3 -m experiments.bench_first_video --size full --cli --baseline-tree "$BASE" \
  "${VARIANT_ARGS[@]}" ${CLI_TIMEOUT:+--cli-timeout $CLI_TIMEOUT} ${SERVER:+--cli-server $SERVER} --out $OUT \
  > $OUT/first_video_cli.log 2>&1
echo "cli rc=$? after $(( $(date +%s) - T0 )) s"
if [ -d carry/osp_v120 ] && [ -d carry/relwhl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/relsite carry/relwhl/*.whl
  PYTHONPATH=/tmp/relsite:$PWD timeout ${TC:-100} python3 -m experiments.bench_torch_release --src carry/osp_v120 \
    --size 29x720p --steps 3 --runs 2 --out $OUT > $OUT/torch_release.log 2>&1
  echo "torch rc=$? after $(( $(date +%s) - T0 )) s"
fi
if [ "${FULL93:-0}" = 1 ]; then  # the 93x720p 3:21 student's command too, cold then warm (goal 40 s cold)
  VARIANT93_ARGS=()
  IFS=';' read -ra MORE93 <<< "${VARIANT93:-}"
  for v in "${MORE93[@]}"; do VARIANT93_ARGS+=(--cli-variant "$v"); done
  timeout ${TD:-150} python3 -m experiments.bench_first_video --size full93 --cli "${VARIANT93_ARGS[@]}" \
    ${CLI_TIMEOUT:+--cli-timeout $CLI_TIMEOUT} --out $OUT \
    > $OUT/first_video_cli_full93.log 2>&1
  echo "cli full93 rc=$? after $(( $(date +%s) - T0 )) s"
fi
LEFT=$(( ${LIMIT:-570} - ($(date +%s) - T0) - 10 ))
if [ $LEFT -gt 60 ]; then  # what time is left: the loader's grouping against one group per tensor
  timeout $LEFT python3 -m experiments.bench_load --preset osp-v1.2-29x720p --out $OUT > $OUT/bench_load.log 2>&1
  echo "load rc=$? after $(( $(date +%s) - T0 )) s"
fi
cp /tmp/gpu.txt $OUT/
find $OUT -name "*.mp4" -delete
ls -la $OUT
