#!/usr/bin/python3
"""Single-process training throughput and peak memory: Attune's trainer
(attune-worker train) against a PyTorch eager loop (bench/peer_train.py), same
model config, batch, sequence length and threads, run one after the other in
one invocation. Prints a table and the ratios.

With --task masked_lm: Attune's masked_lm job (group_texts blocks of seq
tokens) against the peer's MLM step, both with the decoder at the masked
positions only and HF-style at every position.

With --precision bf16 (or both): autocast mixed precision on both sides.

usage: bench/train_throughput.py [--build build] [--steps 40] [--threads 1] [--repeat 2] [--task masked_lm]
                                 [--precision fp32|bf16|both]"""
import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, env):
    """Runs cmd, returns (stdout+stderr, peak RSS in MiB) of the child."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = p.stdout.read().decode()
    _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit("command failed: %s\n%s" % (" ".join(cmd), out[-3000:]))
    return out, usage.ru_maxrss / 1024


def write_workload(work, steps, H, L, heads, ffn, vocab, seq, batch, threads, ranks=1, name="bench", task="",
                   precision="fp32"):
    """Random 200-word rows for `steps` steps of `batch` on each of `ranks`,
    and a spec training a BERT of that shape on them; returns the spec's path."""
    rng = random.Random(0)
    words = ["w%05d" % i for i in range(7000)]
    rows = (batch * ranks * (steps + 1)) + 8
    for name, n in (("train.csv", rows), ("valid.csv", 16)):
        with open(os.path.join(work, name), "w") as f:
            f.write("text,label\n")
            for i in range(n):
                f.write("%s,%d\n" % (" ".join(rng.choice(words) for _ in range(200)), i % 2))
    spec = os.path.join(work, "spec.yaml")
    with open(spec, "w") as f:
        f.write(f"""name: {name}
task: {{type: {task or "sequence_classification"}}}
model:
  config: {{hidden_size: {H}, num_hidden_layers: {L}, num_attention_heads: {heads}, intermediate_size: {ffn},
           max_position_embeddings: 512, vocab_size: {vocab}}}
  vocab_size: {vocab}
data: {{train: {work}/train.csv, validation: {work}/valid.csv, max_length: {seq}}}
method: {{type: full}}
hyperparameters: {{epochs: 1, max_steps: {steps}, batch_size: {batch}, learning_rate: 1.0e-4, warmup_steps: 10,
                  weight_decay: 0.01, max_grad_norm: 1.0, threads: {threads}, precision: {precision}}}
output_dir: {work}/out
""")
    return spec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--task", default="", choices=["", "masked_lm"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "both"])
    a = ap.parse_args()
    H, L, heads, ffn, vocab, seq, batch = a.hidden, a.layers, 4, a.hidden * 4, 8192, 128, 16
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads),
               OMP_WAIT_POLICY="PASSIVE")
    work = tempfile.mkdtemp(prefix="attune_bench_")
    precisions = ["fp32", "bf16"] if a.precision == "both" else [a.precision]
    print(f"task: {a.task or 'sequence_classification'}; "
          f"model: hidden {H}, layers {L}, heads {heads}, ffn {ffn}, vocab {vocab}; seq {seq}, batch {batch}, "
          f"threads {a.threads}; AdamW, warmup, clipping, dropout 0.1; {a.steps} steps x {a.repeat} runs; "
          f"bf16 = autocast, fp32 master weights (Attune: hyperparameters.precision; PyTorch: torch.autocast)")
    print(f"{'':30}{'samples/s':>12}{'peak RSS MiB':>15}")
    got = {}
    for prec in precisions:
        spec = write_workload(work, a.steps, H, L, heads, ffn, vocab, seq, batch, a.threads, task=a.task,
                              precision=prec)
        ours, peer, ours_rss, peer_rss, hf = [], [], [], [], []
        peer_args = (["--mlm", "masked"] if a.task else []) + (["--bf16"] if prec == "bf16" else [])
        for _ in range(a.repeat):
            out, rss = run([os.path.join(a.build, "bin", "attune-worker"), "train", "--spec", spec, "--noresume"], env)
            windows = [float(x) for x in re.findall(r"samples/s=([0-9.]+)", out)]
            ours.append(statistics.median(windows[1:]) if len(windows) > 2 else windows[-1])
            ours_rss.append(rss)
            out, rss = run(["/usr/bin/python3", os.path.join(HERE, "peer_train.py"), "--steps", str(a.steps),
                            "--hidden", str(H), "--layers", str(L), "--ffn", str(ffn), "--threads", str(a.threads)]
                           + peer_args, env)
            peer.append(json.loads(out.strip().splitlines()[-1])["samples_per_second"])
            peer_rss.append(rss)
            if a.task:
                out, _ = run(["/usr/bin/python3", os.path.join(HERE, "peer_train.py"), "--steps", str(a.steps),
                              "--hidden", str(H), "--layers", str(L), "--ffn", str(ffn), "--threads", str(a.threads),
                              "--mlm", "full"] + peer_args[2:], env)
                hf.append(json.loads(out.strip().splitlines()[-1])["samples_per_second"])
        o, p = statistics.median(ours), statistics.median(peer)
        om, pm = statistics.median(ours_rss), statistics.median(peer_rss)
        got[prec] = (o, p)
        print(f"{'attune (libtorch C++) ' + prec:30}{o:12.1f}{om:15.0f}")
        print(f"{'PyTorch eager (python) ' + prec:30}{p:12.1f}{pm:15.0f}")
        print(f"{'ratio attune / peer, ' + prec:30}{o / p:12.2f}{om / pm:15.2f}")
        if hf:
            h = statistics.median(hf)
            print(f"{'PyTorch, decoder at all ' + prec:30}{h:12.1f}")
            print(f"{'ratio attune / that':30}{o / h:12.2f}")
    if len(got) == 2:
        print(f"{'attune bf16 / attune fp32':30}{got['bf16'][0] / got['fp32'][0]:12.2f}")
        print(f"{'PyTorch bf16 / PyTorch fp32':30}{got['bf16'][1] / got['fp32'][1]:12.2f}")
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
