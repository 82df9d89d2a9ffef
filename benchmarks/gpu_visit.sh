#!/usr/bin/env bash
# One visit to the borrowed GPU machine (issue 11), carrying build/airgap/pack:
#
#   benchmarks/gpu_visit.sh smoke             the quick profile end to end (train + evaluate), then the
#                                             paper profile's training throughput at every stage
#   benchmarks/gpu_visit.sh main LIMIT_S [MODELS]   the paper profile's models (default: cascade),
#                                             capped so training and the whole-test-split evaluation
#                                             fit in LIMIT_S seconds
#
# Everything lands in $OUT (at most 8 files come back); at home:
#   facectx airgap import <files_at>/results.tar.gz --pack build/airgap/pack
set -euo pipefail
mode=${1:?usage: gpu_visit.sh smoke | main LIMIT_S [MODELS]}
export PYTHONPATH=src PYTHONUNBUFFERED=1
pack=build/airgap/pack
work=/tmp/facectx-work-$mode  # a fresh scratch folder per call
start=$(date +%s)
export pack work  # the throughput function also runs in a child shell under `timeout`

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  echo "cpus $(nproc)"; free -g | head -2
} > "$OUT/system-$mode.txt" 2>&1 || true

# The paper profile's training throughput at every stage (fast trainer vs plain fp32), with the
# pack's params and weights (the repository's params fetch weights with npm, absent there).
throughput() {
  python -c "from pathlib import Path; from facectx.airgap.run import far_params; far_params(Path('$pack'), Path('$work'), 'paper', False)"
  python benchmarks/train_throughput.py --prepared $work/prepared --params $work/params.yaml --profile paper \
    --steps "$1" --warmup "$2" --out "$OUT/train_throughput.json"
}

case $mode in
smoke)
  python -m facectx.cli airgap run $pack --profile quick --models cascade --out "$OUT/quick" --work $work
  throughput 20 5
  ;;
main)
  limit=${2:?main needs LIMIT_S}
  models=${3:-cascade}
  if [[ ${THROUGHPUT:-0} == 1 ]]; then  # the throughput figures first, when the smoke call did not give them
    python -c "from facectx.airgap.pack import unpack_set, MAIN_SET; unpack_set('$pack', MAIN_SET, '$work/prepared')" || true
    timeout 150 bash -c "$(declare -f throughput); throughput 10 3" || echo "throughput benchmark failed (training goes on)"
    rm -rf $work
  fi
  # Left for the data rebuild (~20 s), the evaluation of the whole test split and a margin.
  reserve=${EVAL_RESERVE_S:-150}
  cap=$(python -c "print(round(($limit - ($(date +%s) - $start) - 25 - $reserve) / 60, 2))")
  echo "training cap: $cap min for each of: $models"
  python -m facectx.cli airgap run $pack --profile paper --models "$models" --cap-minutes "$cap" \
    --parallel "$(tr ',' '\n' <<<"$models" | wc -l)" --out "$OUT" --work $work
  ;;
*)
  echo "unknown mode $mode" >&2; exit 2 ;;
esac
