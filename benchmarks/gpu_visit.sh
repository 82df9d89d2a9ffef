#!/usr/bin/env bash
# One visit to the borrowed GPU machine (issue 11), carrying build/airgap/pack:
#
#   benchmarks/gpu_visit.sh smoke             does the CUDA-graph step train like the eager one
#                                             (benchmarks/cuda_graph_check.py, bf16 and fp32), where
#                                             the 128-px step's device time goes (step_profile.py),
#                                             then the paper profile's training throughput at every stage
#                                             (trainer vs eager bf16 vs plain fp32, and the peak;
#                                             THROUGHPUT=0 skips it; SPEED128=1 adds the 128-px stage
#                                             alone, trainer vs plain; COMPILE=1 adds the trainer with
#                                             torch.compile at 8 and 128 px, compile time included)
#   benchmarks/gpu_visit.sh main LIMIT_S [MODELS]   the paper profile's models, capped so training and
#                                             the whole-test-split evaluation fit in LIMIT_S seconds.
#                                             MODELS=auto (default): the trainer's speed (the smoke
#                                             call's, when the machine is still the same; else a quick
#                                             measure) decides whether the ProGAN variant fits beside
#                                             the cascade without capping it; SEED=N trains
#                                             them with train.seed N (a second seed of a model).
#                                             Every model is scored three ways (SCORE_WAYS, default
#                                             running,standing,ema: one row each); the baselines'
#                                             and real-vs-real rows come from the pack (made at
#                                             home by `facectx airgap pack --profile paper`).
#                                             The realism A/B: MODELS=cascade,realism
#
# Everything lands in $OUT (at most 8 files come back); at home:
#   facectx airgap import <files_at>/results.tar.gz --pack build/airgap/pack
set -euo pipefail
mode=${1:?usage: gpu_visit.sh smoke | main LIMIT_S [MODELS]}
export PYTHONPATH=src PYTHONUNBUFFERED=1
pack=build/airgap/pack
work=/tmp/facectx-work-$mode  # a fresh scratch folder per call
kept=/tmp/facectx-visit  # outlives a call while the machine stays warm
start=$(date +%s)
export pack work  # the throughput function also runs in a child shell under `timeout`

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  echo "cpus $(nproc)"; free -g | head -2
} > "$OUT/system-$mode.txt" 2>&1 || true

# The pack's params with this machine's paths (the repository's params fetch weights with npm,
# absent there), the pack's data rebuilt, and the throughput benchmark on them.
far_params() {
  python -c "from pathlib import Path; from facectx.airgap.far_params import far_params; far_params(Path('$pack'), Path('$work'), 'paper', False)"
}
unpack() {
  python -c "from facectx.airgap.format import MAIN_SET; from facectx.airgap.unpack import unpack_set; unpack_set('$pack', MAIN_SET, '$work/prepared')"
}
throughput() {  # steps warmup out [more options]
  python benchmarks/train_throughput.py --prepared $work/prepared --params $work/params.yaml --profile paper \
    --steps "$1" --warmup "$2" --out "$3" "${@:4}"
}

case $mode in
smoke)
  unpack && far_params
  for precision in bf16 fp32; do
    python benchmarks/cuda_graph_check.py --prepared $work/prepared --params $work/params.yaml --profile paper \
      --precision $precision --eager-runs 3 --out "$OUT/cuda_graph_check_$precision.json" || echo "cuda_graph_check failed"
  done
  python benchmarks/step_profile.py --prepared $work/prepared --params $work/params.yaml --profile paper \
    --stage 128 --out "$OUT/step_profile.json" || echo "step_profile failed"
  if [[ ${COMPILE:-0} == 1 ]]; then  # torch.compile's fused kernels inside the graph: worth their compile time?
    throughput 20 5 "$OUT/train_throughput_compiled.json" --max-rows 2048 --variants fast --compile --stages 8,128
  fi
  if [[ ${SPEED128:-0} == 1 ]]; then  # the 128-px stage only, trainer vs plain fp32: ~1 minute
    throughput 20 5 "$OUT/train_throughput_128.json" --max-rows 2048 --variants fast,plain --stages 128
  fi
  if [[ ${THROUGHPUT:-1} == 1 ]]; then  # THROUGHPUT=0: the speeds are known, keep the call short
    throughput 20 5 "$OUT/train_throughput.json" --max-rows 2048
    mkdir -p $kept && cp "$OUT/train_throughput.json" $kept/
  fi
  ;;
main)
  limit=${2:?main needs LIMIT_S}
  models=${3:-auto}
  if [[ $models == auto ]]; then  # both models when both fit uncapped
    speed=$kept/train_throughput.json
    if [[ ! -f $speed ]]; then  # a fresh machine: measure the trainer alone, briefly
      unpack && far_params
      speed=$OUT/speed_estimate.json
      timeout 90 bash -c "$(declare -f throughput); throughput 6 4 $speed --variants fast --max-rows 1024" \
        || echo "speed estimate failed"
    fi
    models=$(python benchmarks/schedule_estimate.py --throughput "$speed" --seconds-left $((limit - ($(date +%s) - start))) \
      --eval-reserve "${EVAL_RESERVE_S:-150}") || models=cascade
    rm -rf $work
  fi
  # Left for the data rebuild (~20 s), the evaluation of the whole test split (more for two
  # models) and a margin.
  n_models=$(tr ',' '\n' <<<"$models" | wc -l)
  reserve=$(( ${EVAL_RESERVE_S:-150} + (n_models - 1) * 70 ))
  cap=$(python -c "print(round(($limit - ($(date +%s) - $start) - 25 - $reserve) / 60, 2))")
  echo "training cap: $cap min for each of: $models"
  python -m facectx.cli airgap run $pack --profile paper --models "$models" --cap-minutes "$cap" \
    --parallel "$n_models" --out "$OUT" --work $work ${SEED:+--seed "$SEED"} \
    --score-ways "${SCORE_WAYS:-running,standing,ema}"
  ;;
*)
  echo "unknown mode $mode" >&2; exit 2 ;;
esac
