# new loader (HEAD) then the per-tensor loader of 0d3f4d5 in a copy of the tree: `vdit sample` cold and warm each
source experiments/device_calls/common.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site_av .whl_av/*.whl && export PYTHONPATH=/tmp/site_av:$PYTHONPATH
mkdir -p $OUT/grouped $OUT/per_tensor
timeout 110 python3 -m experiments.bench_first_video --size full --cli --out $OUT/grouped > $OUT/grouped/first_video_cli.log 2>&1
echo "grouped rc=$? $(( $(date +%s) - T0 ))"
rm -rf /tmp/base && mkdir /tmp/base && cp -r jax_vdit experiments pallas_kernels convert /tmp/base/ && cp carry/old_loader/release.py /tmp/base/jax_vdit/io/release.py
cd /tmp/base && PYTHONPATH=/tmp/site_av:/tmp/site:/tmp/base timeout 110 python3 -m experiments.bench_first_video --size full --cli --out $OUT/per_tensor > $OUT/per_tensor/first_video_cli.log 2>&1
echo "per-tensor rc=$? $(( $(date +%s) - T0 ))"
cp /tmp/gpu.txt $OUT/; find $OUT -name "*.mp4" -delete; ls -R $OUT | head
