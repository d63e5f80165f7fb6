#!/usr/bin/python3
"""ASHA against the same random search without early stopping, side by side in
one run: starts a coordinator and two agents on loopback, runs
examples/sweep_fine_foods.yaml as it is (ASHA), then the same sweep (same seed,
so the same trials) with early_stopping {type: none}, and prints each one's
best ROC-AUC and total trial-steps, the ratio, and the TF-IDF + logistic
regression baseline of the best trial's report.

Goal (docs/sweeps.md): ASHA's best within 0.01 ROC-AUC of the full search's
with at most 60% of its trial-steps.

usage: bench/sweep_asha.py [--build build] [--trials 8]"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_sweep(cli, addr, path):
    p = subprocess.run([cli, "sweep", "submit", "-f", path, "--watch", "--coordinator", addr],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, timeout=7200)
    if p.returncode != 0:
        sys.exit(p.stdout.decode()[-4000:])
    sweep_id = p.stdout.decode().splitlines()[0]
    got = subprocess.run([cli, "sweep", "get", sweep_id, "-o", "json", "--coordinator", addr],
                         stdout=subprocess.PIPE, check=True, cwd=ROOT)
    return json.loads(got.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--trials", type=int, default=8)
    a = ap.parse_args()
    os.makedirs(os.path.join(ROOT, "runs"), exist_ok=True)  # inside the data root
    work = tempfile.mkdtemp(prefix="sweep-bench-", dir=os.path.join(ROOT, "runs"))
    with open(os.path.join(ROOT, "examples", "sweep_fine_foods.yaml")) as f:
        example = f.read()
    example = re.sub(r"max_trials: \d+", f"max_trials: {a.trials}", example)
    max_steps = int(re.search(r"early_stopping: \{type: asha.*max_steps: (\d+)", example).group(1))
    seed = int(re.search(r"algorithm: \{type: random, seed: (\d+)", example).group(1))
    asha = os.path.join(work, "asha.yaml")
    full = os.path.join(work, "full.yaml")
    with open(asha, "w") as f:
        f.write(example.replace("output_dir: runs/sweep-fine-foods", f"output_dir: {work}/asha"))
    with open(full, "w") as f:
        f.write(re.sub(r"early_stopping: \{type: asha[^}]*\}", "early_stopping: {type: none}",
                       example.replace("output_dir: runs/sweep-fine-foods", f"output_dir: {work}/full"))
                .replace("seed: 42, threads: 1}", f"seed: 42, threads: 1, max_steps: {max_steps}}}"))
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    addr = f"127.0.0.1:{free_port()}"
    procs = [subprocess.Popen([os.path.join(a.build, "bin", "attune-coordinator"), "--listen", addr, "--state",
                               os.path.join(work, "state.db"), "--data-root", ROOT],
                              stdout=open(os.path.join(work, "coordinator.log"), "w"), stderr=subprocess.STDOUT, env=env)]
    for w in (1, 2):
        procs.append(subprocess.Popen([os.path.join(a.build, "bin", "attune-worker"), "agent", "--coordinator", addr,
                                       "--worker-id", f"w{w}", "--cpus", "1", "--data-root", ROOT, "--work-dir",
                                       os.path.join(work, f"agent-{w}")],
                                      stdout=open(os.path.join(work, f"agent-{w}.log"), "w"),
                                      stderr=subprocess.STDOUT, env=env))
    try:
        cli = os.path.join(a.build, "bin", "attune")
        for _ in range(100):
            if subprocess.run([cli, "list", "--coordinator", addr, "--timeout_s", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.2)
        results = {}
        for name, path in (("asha", asha), ("random, no early stopping", full)):
            start = time.time()
            results[name] = (run_sweep(cli, addr, path), time.time() - start)
        print(f"examples/sweep_fine_foods.yaml: {a.trials} trials (seed {seed}), 2 at a time, at most {max_steps} steps each")
        print(f"{'search':<28} {'best roc_auc':>12} {'best trial':>10} {'trial-steps':>11} {'stopped':>7} {'wall s':>7}")
        for name, (s, wall) in results.items():
            stopped = sum(t["stopped_early"] for t in s["trials"])
            print(f"{name:<28} {s['best']['objective']:>12.4f} {s['best']['trial']:>10} {s['trial_steps']:>11} "
                  f"{stopped:>7} {wall:>7.0f}")
        sa, sf = results["asha"][0], results["random, no early stopping"][0]
        print(f"ASHA / full: trial-steps {sa['trial_steps'] / sf['trial_steps']:.2f} (goal <= 0.60), best roc_auc "
              f"{sa['best']['objective'] - sf['best']['objective']:+.4f} (goal >= -0.01)")
        report = json.load(open(os.path.join(os.path.dirname(sf["best"]["model_dir"]), "eval_report.json")))
        base = report.get("baseline", {})
        if "roc_auc" in base:
            print(f"baseline {base['method']} on the same split: roc_auc {base['roc_auc']:.4f}")
        print("per trial (ASHA): " + ", ".join(
            f"{t['trial']}: {t['parameters']['method.type']} lr {t['parameters']['hyperparameters.learning_rate']:.2g} "
            f"-> {t['objective']:.4f} at step {t['steps']}" + (" (stopped)" if t["stopped_early"] else "")
            for t in sa["trials"]))
        print("per trial (full search): " + ", ".join(
            f"{t['trial']}: {t['parameters']['method.type']} lr {t['parameters']['hyperparameters.learning_rate']:.2g} "
            f"-> {t['objective']:.4f}" for t in sf["trials"]))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
