#!/usr/bin/env bash
# The GPU check (issue: bf16, GPU and NCCL), in one go on a fresh GPU machine
# that has a PyTorch 2.x wheel (its CUDA libtorch and CMake files), CUDA and
# NCCL, but no gRPC, no Abseil and no network.
#
#   bash scripts/gpu-check.sh --prepare   # here, with network: Debian .debs into .gpu-debs/
#   bash scripts/gpu-check.sh             # there: build, check, measure (about 5-10 minutes)
#   bash scripts/gpu-check.sh --build-only # step 2 alone (with GPU_CHECK_CUDA=OFF it builds
#                                          # against a CPU libtorch: how the build is tested here)
#
# What it does there:
#   1. unpacks .gpu-debs/*.deb (Abseil, nlohmann-json, ICU, OpenSSL headers)
#      under /tmp/attune-deps, never over /;
#   2. builds attune-gpu-check without the service (-DATTUNE_SERVICE=OFF)
#      against the wheel's CUDA libtorch (-DATTUNE_CUDA=ON) and the wheel's
#      NCCL (the library torch itself loads); Gloo is not needed here and left out;
#   3. NCCL at world size 1 against a CPU reference (allreduce in fp32, bf16
#      and int64 on CUDA and staged host tensors, broadcast, allgather,
#      barrier, the Reducer's CUDA buckets);
#   4. two ranks on this machine's GPU(s): NCCL's answer (it refuses two
#      ranks on one device, and then says so);
#   5. the BERT-base shape (hidden 768, 12 layers, seq 128, batch 32)
#      trained by Attune's trainer and by an equal PyTorch eager loop
#      (bench/peer_train.py) in fp32 and bf16 on the same GPU: samples/s, the
#      ratio, and MFU against 989 TFLOP/s dense bf16.
# Results: JSON lines and a table on stdout, and in $OUT (or build-gpu/) as
# gpu-check.jsonl and gpu-check.md.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
debs=$root/.gpu-debs
packages=(libabsl-dev libabsl20220623 nlohmann-json3-dev libicu-dev libicu72 libssl-dev libssl3)

if [ "${1:-}" = "--prepare" ]; then
  set -e
  mkdir -p "$debs"
  grep -qx '/.gpu-debs/' .gitignore || echo '/.gpu-debs/' >>.gitignore
  (cd "$debs" && apt-get download "${packages[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed')
  du -sh "$debs"
  exit 0
fi

out=${OUT:-$root/build-gpu}
mkdir -p "$out"
log=$out/gpu-check.log
jsonl=$out/gpu-check.jsonl
: >"$jsonl"
say() { echo "== $*" | tee -a "$log"; }
steps=${GPU_CHECK_STEPS:-60}

say "machine: $(date -u +%FT%TZ), $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
py=$(command -v python3)
torch_info=$("$py" -c 'import torch, os; print(torch.__version__, torch.version.cuda, torch.utils.cmake_prefix_path)' 2>&1) || {
  say "python3 has no torch: $torch_info"; exit 1; }
read -r torch_version torch_cuda cmake_prefix <<<"$torch_info"
say "torch $torch_version (CUDA $torch_cuda), cmake prefix $cmake_prefix"
nccl_dir=$("$py" -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null || true)
nccl_args=()
if [ -n "$nccl_dir" ] && [ -f "$nccl_dir/include/nccl.h" ]; then
  nccl_lib=$(ls "$nccl_dir"/lib/libnccl.so* | head -1)
  nccl_args=(-DNCCL_INCLUDE_DIR="$nccl_dir/include" -DNCCL_LIBRARY="$nccl_lib")
  export LD_LIBRARY_PATH="$nccl_dir/lib:${LD_LIBRARY_PATH:-}"
  say "NCCL from the wheel: $nccl_lib"
else
  say "NCCL: the wheel has none; using /usr/local/cuda's"
fi

# 1. Dependencies from the carried .debs, under a prefix of their own.
deps=/tmp/attune-deps
if ls "$debs"/*.deb >/dev/null 2>&1; then
  mkdir -p "$deps"
  for f in "$debs"/*.deb; do dpkg -x "$f" "$deps"; done
  # No LD_LIBRARY_PATH: the binary finds these through its RPATH, and python3
  # (the PyTorch peer) keeps the machine's own libraries.
  say "unpacked $(ls "$debs"/*.deb | wc -l) .debs under $deps"
else
  say "no .gpu-debs/ (run --prepare where there is network); relying on the machine's own packages"
fi

# 2. Build without the service, against the CUDA libtorch.
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
say "configure and build attune-gpu-check"
if ! cmake -S . -B build-gpu "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DATTUNE_SERVICE=OFF -DATTUNE_CUDA="${GPU_CHECK_CUDA:-ON}" -DATTUNE_WITH_GLOO=OFF \
    -DATTUNE_WERROR=OFF -DCMAKE_PREFIX_PATH="$cmake_prefix;$deps/usr;$deps/usr/lib/x86_64-linux-gnu/cmake" \
    -DICU_ROOT="$deps/usr" -DOPENSSL_ROOT_DIR="$deps/usr" -DCUDAToolkit_ROOT=/usr/local/cuda \
    -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc -DCMAKE_CUDA_ARCHITECTURES=90 "${nccl_args[@]}" ${GPU_CHECK_CMAKE_ARGS:-} >>"$log" 2>&1; then
  tail -40 "$log"; say "configure FAILED (whole log: $log)"; exit 1
fi
if ! cmake --build build-gpu -j "$(nproc)" --target attune-gpu-check >>"$log" 2>&1; then
  grep -E "error|Error" "$log" | head -40; say "build FAILED (whole log: $log)"; exit 1
fi
bin=build-gpu/bin/attune-gpu-check
say "built $bin"
[ "${1:-}" = "--build-only" ] && exit 0
status=0

# 3. NCCL correctness at world size 1.
say "NCCL collectives at world size 1 against a CPU reference"
"$bin" nccl --port 29731 2>>"$log" | tee -a "$jsonl" || status=1

# 4. Two ranks.
say "two ranks (NCCL refuses two ranks on one device; its answer is recorded)"
"$bin" two-ranks --port 29741 2>>"$log" | tee -a "$jsonl"
grep -h "Duplicate GPU\|duplicate\|invalid usage" "$log" | head -3 | tee -a "$out/two-ranks.txt"

# 5. BERT-base, ours and PyTorch's, fp32 and bf16.
for precision in fp32 bf16; do
  say "attune trainer, BERT-base shape, $precision"
  "$bin" train --precision "$precision" --hidden 768 --layers 12 --heads 12 --seq 128 --batch 32 \
    --steps "$steps" --work /tmp/attune-gpu-train 2>>"$log" | tee -a "$jsonl" || status=1
  say "PyTorch $torch_version eager, same shape, $precision"
  flag=""; [ "$precision" = bf16 ] && flag=--bf16
  "$py" bench/peer_train.py --device cuda --hidden 768 --layers 12 --heads 12 --ffn 3072 --vocab 30522 --seq 128 \
    --batch 32 --steps "$((steps - 10))" --warmup_steps 10 $flag 2>>"$log" |
    sed "s/^{/{\"check\": \"peer_train\", \"precision\": \"$precision\", /" | tee -a "$jsonl" || status=1
done

# The table.
"$py" - "$jsonl" "$out/gpu-check.md" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
ours = {r["precision"]: r for r in rows if r.get("check") == "train" and r.get("ok")}
peer = {r["precision"]: r for r in rows if r.get("check") == "peer_train"}
flops = 3 * (2 * 128 * 12 * (12 * 768 * 768) + 4 * 128 * 128 * 768 * 12)
lines = ["| precision | attune samples/s | PyTorch samples/s | ratio attune / PyTorch | attune MFU | PyTorch MFU |",
         "|---|---|---|---|---|---|"]
for p in ("fp32", "bf16"):
    if p in ours and p in peer:
        a, b = ours[p]["samples_per_second"], peer[p]["samples_per_second"]
        lines.append(f"| {p} | {a:.1f} | {b:.1f} | **{a / b:.2f}** | {a * flops / 989e12:.1%} | {b * flops / 989e12:.1%} |")
if "fp32" in ours and "bf16" in ours:
    lines.append(f"\nattune bf16 / attune fp32: **{ours['bf16']['samples_per_second'] / ours['fp32']['samples_per_second']:.2f}**")
bad = [r for r in rows if r.get("ok") is False]
lines.append(f"\nchecks: {sum(1 for r in rows if r.get('ok') is True)} ok, {len(bad)} failed")
for r in bad:
    lines.append(f"- {r.get('check')}: {r.get('error', '')}")
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
say "done (status $status); results in $out"
exit $status
