#!/usr/bin/env bash
# The GPU checks in one run: the CUDA tests, then extract against the plain
# decode-preprocess-forward loop on the GPU for AlexNet, ResNet-50 and a ViT,
# with the stage times that say what limits each run, and a sampling profile
# (py-spy, when installed) of one run's main process. --full adds each codec,
# each GPU option and a sweep of decode workers (about 7 minutes on one H200;
# without it about 3). Output goes to stdout and to
# ${GPU_CHECK_LOG:-/tmp/gpu_check.txt}; the profile to $GPU_CHECK_LOG.profile.
#
#   bash benchmarks/gpu_check.sh [--full]                 # actstore's dependencies installed
#   bash benchmarks/gpu_check.sh [--full] WHEEL_FOLDER    # no package index: install these wheels first
set -u
cd "$(dirname "$0")/.."
full=0
if [ "${1:-}" = "--full" ]; then full=1; shift; fi
log="${GPU_CHECK_LOG:-/tmp/gpu_check.txt}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ $# -ge 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/actstore-site "$1"/*.whl || exit 1
  export PYTHONPATH="$PWD:/tmp/actstore-site" PATH="/tmp/actstore-site/bin:$PATH"
fi
images=${GPU_CHECK_IMAGES:-4096}
workers=$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))
bench() {
  echo "== bench_extract --images $images $*"
  # The whole output goes to $log.full; tables, rates, stages and errors to stdout.
  timeout 150 python3 benchmarks/bench_extract.py --device cuda --images "$images" --repeats 1 "$@" 2>&1 \
    | tee -a "$log.full" | grep -v '^|--' | grep -E '^machine|img/s|stages|^\| [a-z]|Error|error' | awk '!seen[$0]++'
}
{
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision, zarr, h5py; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'zarr', zarr.__version__, 'h5py', h5py.__version__)"
timeout 240 python3 -m pytest -q -p no:cacheprovider -m cuda tests/extract/test_cuda.py 2>&1 | tail -15
# The three jobs with default options, both formats, and the stage rates.
bench --num-workers "$workers" --stages --case alexnet:features.0,classifier.4 --case resnet50:layer4 \
  --case vit_b_16:encoder.layers.encoder_layer_11
if command -v py-spy >/dev/null; then
  echo "== py-spy: actstore extract resnet50 layer4 (main process, every thread, idle included)"
  timeout 120 py-spy record --idle --threads --format raw --rate 200 --output "$log.profile" -- \
    python3 -m actstore extract --model-name resnet50 --weights none --module-name layer4 --quiet \
      --in-path "/tmp/actstore-bench/images-$images-256px-s0-b256" --out-path /tmp/actstore-profile.zarr \
      --device cuda --num-workers "$workers" --overwrite 2>&1 | tail -3
fi
if [ $full = 1 ]; then
  for codec in lz4 none; do   # codecs at GPU rates, on the largest layer
    bench --num-workers "$workers" --compression $codec --case alexnet:features.0,classifier.4
  done
  for options in "--amp float16" "--amp float16 --channels-last" "--decoder torchvision"; do
    bench --num-workers "$workers" --formats zarr $options --case resnet50:layer4 --case alexnet:features.0,classifier.4
  done
  for w in 4 8; do   # decode workers (the default on a GPU is min(8, cores - 2))
    bench --num-workers $w --formats zarr --case resnet50:layer4
  done
fi
} 2>&1 | tee "$log"
