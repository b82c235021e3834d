# sourced by the device-call scripts: wheels, PYTHONPATH, a `vdit` function, the GPU record
if python3 -c "import grain, array_record, portpicker" 2>/dev/null; then export PYTHONPATH=$PWD
else python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1; fi
export TQDM_MININTERVAL=30 PYTHONUNBUFFERED=1
vdit() { python3 -c 'import sys; from jax_vdit.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > /tmp/gpu.txt 2>&1 || echo "no nvidia-smi" > /tmp/gpu.txt
python3 -c 'import jax, flax, optax; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__)' >> /tmp/gpu.txt
cat /tmp/gpu.txt
T0=$(date +%s)
