#!/usr/bin/env bash
# The GPU checks in one run on a machine with a CUDA GPU (about 6 minutes on
# one H100): the CUDA tests, then extract against the plain loop on the GPU
# with each GPU option. Results go to stdout and, when $OUT is set, to
# $OUT/gpu_check.txt (else /tmp/gpu_check.txt).
set -u
cd "$(dirname "$0")/.."
log="${OUT:-/tmp}/gpu_check.txt"
{
python -c "import actstore, torch, zarr, h5py" 2>/dev/null || pip install -q -e '.[test]'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
timeout 240 python -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py
workers=$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))
for options in "" "--amp float16" "--amp float16 --channels-last" "--decoder torchvision"; do
  echo "== bench_extract --device cuda $options"
  timeout 150 python benchmarks/bench_extract.py --device cuda --images 2048 --repeats 1 \
    --num-workers "$workers" $options | tail -8
done
} 2>&1 | tee "$log"
