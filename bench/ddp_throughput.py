#!/usr/bin/python3
"""Data-parallel scaling: Attune (attune-worker, Gloo, --nproc) against PyTorch
DistributedDataParallel with Gloo (bench/peer_train.py), 1 and 2 ranks of 1
thread each, same model, per-rank batch, sequence length and data shapes, in
one invocation. Also the fraction of allreduce time hidden behind backward
and the reducer's bus bandwidth against a raw Gloo allreduce of the same bytes.

With --precision bf16: autocast mixed precision on both sides (Attune's
hyperparameters.precision: bf16; torch.autocast in the peer), gradients and
their allreduce in fp32 on both.

usage: bench/ddp_throughput.py [--build build] [--steps 30] [--precision fp32|bf16]"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile

from benchlib import sh
from train_throughput import write_workload

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def peer(args, world, env, extra=()):
    port = free_port()
    procs = [subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "peer_train.py"), "--world", str(world),
                               "--rank", str(r), "--port", str(port)] + list(args) + list(extra),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) for r in range(world)]
    outs = [p.communicate()[0].decode() for p in procs]
    if any(p.returncode for p in procs):
        sys.exit("peer failed:\n" + "\n".join(o[-2000:] for o in outs))
    return json.loads(outs[0].strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    a = ap.parse_args()
    H, L, heads, ffn, vocab, seq, batch = a.hidden, a.layers, 4, a.hidden * 4, 8192, 128, 16
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    work = tempfile.mkdtemp(prefix="attune_ddp_")
    spec = write_workload(work, a.steps, H, L, heads, ffn, vocab, seq, batch, 1, ranks=2, name="ddp-bench",
                          precision=a.precision)
    worker = os.path.join(a.build, "bin", "attune-worker")

    def ours(nproc, *flags):
        cmd = [worker, "train", "--spec", spec, "--noresume"] + (["--nproc", str(nproc)] if nproc > 1 else []) + list(flags)
        out = sh(cmd, env)
        windows = [float(x) for x in re.findall(r"rank=0 step=\d+/\d+ .*samples/s=([0-9.]+)", out)]
        res = {"samples_per_second": statistics.median(windows[1:]) if len(windows) > 2 else windows[-1]}
        m = re.search(r"rank=0 allreduce: (\d+) bytes/step, ([0-9.]+) s/step, (-?\d+)% hidden", out)
        if m:
            res.update(bytes=int(m.group(1)), comm_seconds=float(m.group(2)), hidden=int(m.group(3)) / 100)
        return res

    pargs = ["--steps", str(a.steps), "--hidden", str(H), "--layers", str(L), "--ffn", str(ffn)]
    if a.precision == "bf16":
        pargs.append("--bf16")
    o1, o2 = ours(1), ours(2, "--overlap=on")
    o2_sync = ours(2, "--overlap=off")
    p1, p2 = peer(pargs, 1, env), peer(pargs, 2, env)
    raw = peer(["--steps", "20", "--allreduce_bytes", str(o2_sync["bytes"])], 2, env)
    # The reducer with every gradient ready and the ranks lined up by a barrier
    # (in training, its time also holds the wait for the slower rank's backward).
    port = free_port()
    rb = [subprocess.Popen([os.path.join(a.build, "bin", "attune-reducer-bench"), "--rank", str(r), "--world_size", "2",
                            "--port", str(port), "--hidden", str(H), "--layers", str(L), "--vocab", str(vocab)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env) for r in range(2)]
    red = json.loads(rb[0].communicate()[0].decode().strip().splitlines()[-1])
    rb[1].wait()
    print(f"model: hidden {H}, layers {L}, heads {heads}, ffn {ffn}, vocab {vocab}; seq {seq}, per-rank batch {batch}; "
          f"1 thread per rank; Gloo on loopback; {a.steps} steps; precision {a.precision}")
    print(f"{'':34}{'1 rank':>10}{'2 ranks':>10}{'scaling':>10}")
    print(f"{'attune samples/s':34}{o1['samples_per_second']:10.1f}{o2['samples_per_second']:10.1f}"
          f"{o2['samples_per_second'] / (2 * o1['samples_per_second']):10.2f}")
    print(f"{'attune, allreduce after backward':34}{'':10}{o2_sync['samples_per_second']:10.1f}"
          f"{o2_sync['samples_per_second'] / (2 * o1['samples_per_second']):10.2f}")
    print(f"{'PyTorch DDP samples/s':34}{p1['samples_per_second']:10.1f}{p2['samples_per_second']:10.1f}"
          f"{p2['samples_per_second'] / (2 * p1['samples_per_second']):10.2f}")
    print(f"ratio attune / DDP at 2 ranks: {o2['samples_per_second'] / p2['samples_per_second']:.2f} (hooks), "
          f"{o2_sync['samples_per_second'] / p2['samples_per_second']:.2f} (after backward)")
    print(f"allreduce hidden behind backward (hooks): {100 * o2['hidden']:.0f}%")
    print(f"gradient reduction of {red['bytes']:.0f} bytes ({red['buckets']} bucket(s)), bus bandwidth, 2 ranks:")
    print(f"  attune Reducer (buckets, allreduce, gradients as bucket views) {red['reducer_bus_gbps']:.3f} GB/s")
    print(f"  raw allreduce of one flat buffer, same communicator         {red['raw_bus_gbps']:.3f} GB/s")
    print(f"  raw allreduce, PyTorch Gloo (torch.distributed)              {raw['bus_gbps']:.3f} GB/s (algorithm = bus bandwidth at 2 ranks)")
    print(f"  ratio Reducer / raw: {red['reducer_bus_gbps'] / red['raw_bus_gbps']:.2f}")
    print(f"  ring reduce-scatter + all-gather in place (workers.sharding) {red['reduce_scatter_seconds'] * 1e3:.1f} + "
          f"{red['all_gather_seconds'] * 1e3:.1f} ms against the raw allreduce's {red['raw_seconds'] * 1e3:.1f} ms "
          f"(bus {red['reduce_scatter_bus_gbps']:.3f} and {red['all_gather_bus_gbps']:.3f} GB/s)")
    print(f"in training (allreduce after backward): {o2_sync['comm_seconds'] * 1000:.1f} ms/step from first launch to "
          f"done, which includes waiting for the other rank's backward")
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
