# sourced by the device-call scripts: wheels, PYTHONPATH, a `vdit` function, the GPU record
if python3 -c "import grain, array_record, portpicker" 2>/dev/null; then export PYTHONPATH=$PWD
else python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1; fi
# the package asks for ml_dtypes<0.7 (0.7.0's import cost about a second a process on a 2-core CPU,
# experiments/results/first_video/ml_dtypes_import_cpu_2026-12-07/): where the image has 0.7 or later and
# .whl_mld/0.6.0 travelled, put 0.6.0 first, as a user of the package gets it
if [ -d .whl_mld/0.6.0 ] && python3 -c 'import sys, ml_dtypes as m; sys.exit(tuple(map(int, m.__version__.split(".")[:2])) < (0, 7))' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/mld0.6.0 .whl_mld/0.6.0/*.whl \
    && export PYTHONPATH=/tmp/mld0.6.0:$PYTHONPATH
fi
export TQDM_MININTERVAL=30 PYTHONUNBUFFERED=1
vdit() { python3 -c 'import sys; from jax_vdit.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > /tmp/gpu.txt 2>&1 || echo "no nvidia-smi" > /tmp/gpu.txt
python3 -c 'import jax, flax, optax, ml_dtypes; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, "ml_dtypes", ml_dtypes.__version__)' >> /tmp/gpu.txt
cat /tmp/gpu.txt
T0=$(date +%s)
