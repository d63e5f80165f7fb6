#!/usr/bin/python3
"""workers.sharding on 2 Gloo ranks: peak resident memory per rank and
training throughput of `none` against `optimizer` (ZeRO-1) and `gradients`
(ZeRO-2), one after the other in one invocation, on a from-scratch
Llama-shaped decoder whose state dominates its memory (batch 1, short
sequences; by default untied 128,256-token embeddings and head, the Llama 3.1
tokenizer), trained on the SPDX conversations
(examples/data/spdx_chat/train.jsonl) with attune-worker train --nproc 2.

Memory: each rank logs its peak resident set (getrusage) before the final
evaluation and the export ("while training"). The model's state per rank is
16 bytes a parameter unsharded (fp32 weights 4, gradients 4, AdamW's two
moments 8), 4 + 4 + 8/N with `optimizer` and 4 + 4/N + 8/N with `gradients`
(plus the buckets in flight, NOTE [sharded gradients]): the expected savings
at N = 2 are 4 and 6 bytes a parameter, printed beside the measured ones.
Throughput: the median of the tokens/s windows each run logs (every 10
steps) after the first, rank 0's.

usage: bench/sharding.py [--build build] [--hidden 512] [--layers 8] [--steps 30] [--repeat 1]
                         [--tokenizer llama3_1|llama2] [--tied] [--bucket_cap_mb MB] [--modes none,optimizer,gradients]"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

from benchlib import cpu_line, sh as run

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--max_length", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--tokenizer", default="llama3_1", choices=["llama3_1", "llama2"])
    ap.add_argument("--tied", action="store_true", help="tie the embeddings and the head")
    ap.add_argument("--bucket_cap_mb", type=int, default=0, help="the reducer's bucket size (0: the default)")
    ap.add_argument("--modes", default="none,optimizer,gradients")
    a = ap.parse_args()
    heads, kv, ffn = a.hidden // 64, max(1, a.hidden // 256), a.hidden * 11 // 4
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    tok = os.path.join(ROOT, f"tools/node_modules/@lenml/tokenizer-{a.tokenizer}/models")
    vocab = 128256 if a.tokenizer == "llama3_1" else 32000
    work = tempfile.mkdtemp(prefix="attune_sharding_bench_")
    if a.tokenizer == "llama2":
        # Its package has no chat template: Llama 2's [INST] turns.
        os.makedirs(os.path.join(work, "tok"))
        with open(os.path.join(tok, "tokenizer_config.json")) as f:
            config = json.load(f)
        config["chat_template"] = ("{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] "
                                   "{{ m.content }} [/INST]{% elif m.role == 'assistant' %}{{ m.content }}{{ eos_token }}"
                                   "{% endif %}{% endfor %}")
        with open(os.path.join(work, "tok", "tokenizer_config.json"), "w") as f:
            json.dump(config, f)
        shutil.copy(os.path.join(tok, "tokenizer.json"), os.path.join(work, "tok"))
        tok = os.path.join(work, "tok")
    data = os.path.join(ROOT, "examples/data/spdx_chat")
    with open(os.path.join(data, "valid.jsonl")) as f, open(os.path.join(work, "valid.jsonl"), "w") as g:
        g.writelines(sorted(f.readlines(), key=len)[:2])  # the final evaluation is not measured: keep it short
    print(f"CPU: {cpu_line()}; 2 ranks x 1 thread, Gloo")
    results = {}
    params = None
    modes = tuple(a.modes.split(","))
    for mode in modes:
        spec = os.path.join(work, f"{mode}.yaml")
        with open(spec, "w") as f:
            f.write(f"""name: sharding-bench
task: {{type: causal_lm}}
model:
  config: {{model_type: llama, hidden_size: {a.hidden}, num_hidden_layers: {a.layers}, num_attention_heads: {heads},
           num_key_value_heads: {kv}, intermediate_size: {ffn}, max_position_embeddings: {a.max_length},
           tie_word_embeddings: {"true" if a.tied else "false"}}}
  tokenizer: {tok}
data: {{train: {data}/train.jsonl, validation: {work}/valid.jsonl, format: messages, max_length: {a.max_length}}}
hyperparameters: {{max_steps: {a.steps + 10}, batch_size: 1, learning_rate: 1.0e-3, weight_decay: 0.01, threads: 1}}
evaluation: {{baseline: false}}
workers: {{count: 2, sharding: {mode}}}
output_dir: {work}/out_{mode}
""")
        peaks, speeds = [[], []], []
        for _ in range(a.repeat):
            cmd = [os.path.join(a.build, "bin", "attune-worker"), "train", "--spec", spec, "--noresume", "--nproc", "2"]
            if a.bucket_cap_mb > 0:
                cmd.append(f"--bucket_cap_mb={a.bucket_cap_mb}")
            out = run(cmd, env)
            for r in (0, 1):
                m = re.search(rf"rank={r} peak resident memory while training: (\d+) MiB", out)
                if not m:
                    sys.exit("no peak memory logged:\n" + out[-2000:])
                peaks[r].append(int(m.group(1)))
            windows = [float(x) for x in re.findall(r"rank=0 step=\d+/\d+.*?tokens/s=([0-9.]+)", out)]
            if len(windows) < 2:
                sys.exit("too few logged windows:\n" + out[-2000:])
            speeds.append(statistics.median(windows[1:]))
            m = re.search(r"parameters: (\d+) trainable", out)
            params = int(m.group(1)) if m else params
        results[mode] = (peaks, speeds)
    mib = 1 << 20
    print(f"decoder: hidden {a.hidden}, layers {a.layers}, heads {heads}, kv heads {kv}, ffn {ffn}, vocab {vocab} "
          f"({'tied' if a.tied else 'untied'}): {params / 1e6:.1f}M parameters; batch 1 per rank, max_length "
          f"{a.max_length}, {a.steps + 10} steps x {a.repeat} runs")
    print(f"state per rank, 16 bytes a parameter: {16 * params / mib:.0f} MiB unsharded; at 2 ranks "
          f"{12 * params / mib:.0f} MiB with optimizer, {10 * params / mib:.0f} MiB with gradients (expected savings "
          f"{4 * params / mib:.0f} and {6 * params / mib:.0f} MiB)")
    print(f"{'':12}{'rank 0 peak MiB':>20}{'rank 1 peak MiB':>20}{'tokens/s':>14}")
    for mode, (peaks, speeds) in results.items():
        spread = lambda v: f"{statistics.median(v):.0f}" + (f" ({min(v):.0f}-{max(v):.0f})" if len(v) > 1 else "")
        print(f"{mode:12}{spread(peaks[0]):>20}{spread(peaks[1]):>20}{spread(speeds):>14}")
    if "none" not in results:
        return
    (p0n, p1n), sn = [statistics.median(p) for p in results["none"][0]], statistics.median(results["none"][1])
    for mode in modes:
        if mode == "none":
            continue
        (p0, p1), sm = [statistics.median(p) for p in results[mode][0]], statistics.median(results[mode][1])
        print(f"{mode} / none: peak rank 0 {p0 / p0n:.2f}, rank 1 {p1 / p1n:.2f} (saved {p0n - p0:.0f} and "
              f"{p1n - p1:.0f} MiB); throughput {sm / sn:.2f}")
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
