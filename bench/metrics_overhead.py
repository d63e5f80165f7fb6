#!/usr/bin/python3
"""Cost of metrics per training step, in one run: trains BERT-mini (the
train_throughput.py workload) with its events captured, then replays those
events through the agent's metrics path (attune-metrics-bench), which prints
the microseconds per step next to the step time of that same run.

usage: bench/metrics_overhead.py [--build build] [--steps 30] [--threads 1]"""
import argparse
import os
import subprocess
import sys
import tempfile

from train_throughput import write_workload

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="attune_metrics_bench_")
    spec = write_workload(work, a.steps, 256, 4, 4, 1024, 8192, 128, 16, a.threads)
    events = os.path.join(work, "events.jsonl")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads),
               OMP_WAIT_POLICY="PASSIVE")
    with open(events, "w") as f:
        p = subprocess.run([os.path.join(a.build, "bin", "attune-worker"), "train", "--spec", spec, "--noresume",
                            "--events_fd", str(f.fileno())], pass_fds=(f.fileno(),), env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        sys.exit(p.stdout.decode()[-3000:])
    print(f"BERT-mini (hidden 256, 4 layers), seq 128, batch 16, {a.steps} steps, {a.threads} thread(s)")
    subprocess.run([os.path.join(a.build, "bin", "attune-metrics-bench"), events], check=True)
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
