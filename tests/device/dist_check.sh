#!/usr/bin/env bash
# One call on a machine of 2 GPUs (device tool, kind nvidia-h200-x2): build with CUDA, run the
# communicator tests under mpirun, then train the same global batch on 1 GPU (accumulation 2) and on
# 2 GPUs (`mpirun -np 2`, one rank per GPU, accumulation 1), and compare the loss curves. Prints a short
# table last. Needs .carry/ (Debian's libpcre2-dev .deb: the image has no PCRE2 headers).
#   device run (kind nvidia-h200-x2): bash tests/device/dist_check.sh   (carry: [".carry"])
set -uo pipefail
source tests/device/gpu_build.sh
gpu_build qft-dist qft_parallel_tests
BUILD_S=$SECONDS
MPIRUN="mpirun --oversubscribe --allow-run-as-root -x NCCL_NVLS_ENABLE"
$MPIRUN -np 2 build-gpu/qft_parallel_tests > "$OUT/parallel_np2.log" 2>&1; PAR2_RC=$?
$MPIRUN -np 4 build-gpu/qft_parallel_tests > "$OUT/parallel_np4.log" 2>&1; PAR4_RC=$?
# The same communicator tests against NCCL, one rank per GPU.
$MPIRUN -x QFT_TEST_COMMUNICATOR=nccl -np 2 build-gpu/qft_parallel_tests > "$OUT/parallel_nccl.log" 2>&1; NCCL_RC=$?

QFT=build-gpu/qft-dist
W=/tmp/qft-dist-check
rm -rf $W && mkdir -p $W
$QFT init-model --preset tiny --dtype bf16 --initializer-range 0.2 --seed 0 --tokenizer build-gpu/qwen3-tokenizer \
     --output $W/model > "$OUT/init.log" 2>&1 || { tail "$OUT/init.log"; exit 1; }
run() {  # name, micro-batch, accumulation, launcher...
  local name=$1 mb=$2 acc=$3; shift 3
  "$@" $QFT configs/demo.yaml --override model.model_name_or_path=$W/model --override model.device=cuda \
      --override data.cache_dir=$W/cache --override output.output_dir=$W/$name \
      --override training.max_steps=40 --override training.logging_steps=1 --override training.save_steps=0 \
      --override training.lr_scheduler_type=constant --override training.warmup_ratio=0 \
      --override training.per_device_train_batch_size=$mb --override training.gradient_accumulation_steps=$acc \
      > "$OUT/train_$name.log" 2>&1
  echo $?
}
ONE_RC=$(run one 2 2)
TWO_RC=$(run two 2 1 $MPIRUN -np 2)
cp $W/one/trainer_log.jsonl "$OUT/one.jsonl" 2>/dev/null; cp $W/two/trainer_log.jsonl "$OUT/two.jsonl" 2>/dev/null
python3 - "$W/one/trainer_log.jsonl" "$W/two/trainer_log.jsonl" > "$OUT/compare.txt" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
n = min(len(a), len(b))
rel = [abs(x["loss"] - y["loss"]) / abs(x["loss"]) for x, y in zip(a, b)]
print(f"steps {len(a)} vs {len(b)}; max relative loss difference {max(rel):.2e} (first {a[0]['loss']:.4f} vs {b[0]['loss']:.4f}, last {a[n-1]['loss']:.4f} vs {b[n-1]['loss']:.4f})")
print(f"tokens/s (last step) 1 GPU {a[n-1]['tokens_per_second']:.0f}, 2 GPUs {b[n-1]['tokens_per_second']:.0f}")
PY
echo
echo "| check | result |"
echo "|---|---|"
echo "| build (s) | $BUILD_S |"
echo "| qft_parallel_tests mpirun -np 2 / -np 4 | rc=$PAR2_RC / rc=$PAR4_RC $(grep -h -E 'PASSED|FAILED' "$OUT"/parallel_np*.log | tr '\n' ' ') |"
echo "| qft_parallel_tests on NCCL, 2 GPUs | rc=$NCCL_RC $(grep -h -E 'PASSED|FAILED' "$OUT"/parallel_nccl.log | tr '\n' ' ') |"
echo "| train 1 GPU acc 2 / 2 GPUs (NCCL) | rc=$ONE_RC / rc=$TWO_RC |"
echo "| loss curves | $(head -1 "$OUT/compare.txt") |"
echo "| throughput | $(tail -1 "$OUT/compare.txt") |"
nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c | sed 's/^/| GPUs | /; s/$/ |/'
