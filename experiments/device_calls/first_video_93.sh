# Issue 19, one device call (about 300 s after the machine starts): `vdit sample` of the 93x720p 4-step student with
# the paper's 3:21 mask on every layer, cold then warm (goal: 40 s cold), then the 3:21 sampler at 93x720p scanned
# against unrolled (the 2% goal). Random weights. Carried: .whl, .whl_av (`stash_large_files.sh out` first).
source experiments/device_calls/common.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site_av .whl_av/*.whl \
  && export PYTHONPATH=/tmp/site_av:$PYTHONPATH
python3 -c "import av; print('av', av.__version__)" || { echo "no PyAV: carry .whl_av" >&2; exit 1; }
timeout ${TA:-200} python3 -m experiments.bench_first_video --size full93 --cli --out $OUT > $OUT/first_video_cli_full93.log 2>&1
echo "cli rc=$? after $(( $(date +%s) - T0 )) s"
timeout ${TB:-300} python3 -m experiments.bench_first_video --size full93 --compare-scan --depths 32 --attention 3:21 \
  --runs 2 --out $OUT > $OUT/compare_scan_full93.log 2>&1
echo "compare rc=$? after $(( $(date +%s) - T0 )) s"
cp /tmp/gpu.txt $OUT/
find $OUT -name "*.mp4" -delete
ls -la $OUT
