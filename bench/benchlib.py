"""Helpers the bench scripts share."""
import subprocess
import sys


def sh(cmd, env):
    """Runs cmd; its stdout and stderr together, or exits with them when it fails."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = p.stdout.decode()
    if p.returncode != 0:
        sys.exit("command failed: %s\n%s" % (" ".join(cmd), out[-3000:]))
    return out


def cpu_line():
    """The CPU's model name and whether it has avx512_bf16 or only avx2."""
    with open("/proc/cpuinfo") as f:
        lines = f.readlines()
    name = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("model name")), "?")
    flags = next((l for l in lines if l.startswith("flags")), "")
    return "%s (%s)" % (name, "avx512_bf16" if "avx512_bf16" in flags else "avx2" if "avx2" in flags else "no avx2")
