# Issue 19, runbook item 5 "A" in one device call (about 480 s): the 4-step 1:7 student at 29x720p to an mp4 in
# fresh processes, cold then warm (the VAE's stages compiled in the background, and the sequential baseline), then
# the `vdit sample` command itself (`--cli`). Random weights, release architecture.
# The mp4 writer (PyAV, 35 MB) is not in the device image: its wheel travels in .whl_av/ (listed in
# .git/info/exclude), too big beside the whole tree, so:
#   bash experiments/device_calls/stash_large_files.sh out
#   call, carry [.whl, .whl_av]:  bash experiments/device_calls/first_video.sh
#   bash experiments/device_calls/stash_large_files.sh back
# VAE_TILES=exact (or exact,uniform for the API cases; default uniform) picks the VAE's tiling; VAE_WARMUP=background|off|both;
# API=0 runs only the command (`--cli`, about 200 s).
source experiments/device_calls/common.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site_av .whl_av/*.whl \
  && export PYTHONPATH=/tmp/site_av:$PYTHONPATH
python3 -c "import av; print('av', av.__version__)" || { echo "no PyAV: carry .whl_av" >&2; exit 1; }
if [ "${API:-1}" = 1 ]; then
timeout ${TA:-300} python3 -m experiments.bench_first_video --size full --cases student --vae-warmup ${VAE_WARMUP:-both} \
  --vae-tiles ${VAE_TILES:-uniform} --out $OUT \
  > $OUT/first_video_student.log 2>&1
echo "student cases rc=$? after $(( $(date +%s) - T0 )) s"
fi
timeout ${TB:-190} python3 -m experiments.bench_first_video --size full --cli --vae-tiles ${VAE_TILES:-uniform} --out $OUT > $OUT/first_video_cli.log 2>&1
echo "cli rc=$? after $(( $(date +%s) - T0 )) s"
cp /tmp/gpu.txt $OUT/
find $OUT -name "*.mp4" -size +2M -delete  # the videos themselves are not needed back
ls -la $OUT
