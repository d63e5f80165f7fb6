"""A real coordinator (with bearer tokens) and two agents on loopback, for the
Python client's tests; started once per session and stopped at its end."""
import os
import random
import socket
import subprocess
import tempfile
import time

import pytest

BIN = os.path.join(os.environ.get("ATTUNE_BINARY_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build")),
                   "bin")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Service:
    """A coordinator and two agents. `data_root`: the coordinator's (default `root`); `tokens`: require
    a submit token (self.token) and a worker token."""

    def __init__(self, root, data_root=None, tokens=True):
        self.root = root
        self.token = "submit-" + os.urandom(6).hex()
        self.address = f"127.0.0.1:{free_port()}"
        with open(os.path.join(root, "submit.tokens"), "w") as f:
            f.write(self.token + "\n")
        with open(os.path.join(root, "worker.tokens"), "w") as f:
            f.write("worker-secret\n")
        rng = random.Random(7)
        pos, neg = ["great", "lovely", "tasty", "superb"], ["awful", "stale", "bland", "broken"]
        with open(os.path.join(root, "train.csv"), "w") as tr, open(os.path.join(root, "valid.csv"), "w") as va:
            for f in (tr, va):
                f.write("text,label\n")
            for i in range(400):
                w = rng.choice(pos) if i % 2 else rng.choice(neg)
                (tr if i < 320 else va).write(f"the food was {w} number {i},{'pos' if i % 2 else 'neg'}\n")
        self.procs = []
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        coordinator_tokens = ["--submit-token-file", os.path.join(root, "submit.tokens"),
                              "--worker-token-file", os.path.join(root, "worker.tokens")] if tokens else []
        agent_tokens = ["--token-file", os.path.join(root, "worker.tokens")] if tokens else []
        self.procs.append(subprocess.Popen(
            [os.path.join(BIN, "attune-coordinator"), "--listen", self.address, "--state", os.path.join(root, "state.db"),
             "--data-root", data_root or root, "--heartbeat-timeout-s", "3", *coordinator_tokens],
            stdout=open(os.path.join(root, "coordinator.log"), "w"), stderr=subprocess.STDOUT, env=env))
        for w in (0, 1):
            self.procs.append(subprocess.Popen(
                [os.path.join(BIN, "attune-worker"), "agent", "--coordinator", self.address, "--worker-id", f"w{w}",
                 "--cpus", "1", "--work-dir", os.path.join(root, f"agent-{w}"), "--data-root", data_root or root, *agent_tokens],
                stdout=open(os.path.join(root, f"agent-{w}.log"), "w"), stderr=subprocess.STDOUT, env=env))

    def spec(self, name, steps=30, **extra):
        s = {"name": name,
             "model": {"config": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                  "intermediate_size": 32, "max_position_embeddings": 64}, "vocab_size": 100},
             "data": {"train": os.path.join(self.root, "train.csv"), "validation": os.path.join(self.root, "valid.csv"),
                      "max_length": 24},
             "method": {"type": "full"},
             "hyperparameters": {"epochs": 100, "max_steps": steps, "batch_size": 4, "learning_rate": 5e-3},
             "evaluation": {"every_steps": 10, "baseline": False},
             "workers": {"count": 1},
             "output_dir": os.path.join(self.root, "out-" + name)}
        for k, v in extra.items():
            s[k] = v
        return s

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="session")
def service():
    with tempfile.TemporaryDirectory(prefix="attune_pyclient_") as root:
        svc = Service(root)
        from attune_client import Client
        c = Client(svc.address, token=svc.token, timeout=2)
        deadline = time.monotonic() + 30
        while True:
            try:
                if len(c.workers()) == 2:
                    break
            except Exception:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise RuntimeError("the agents did not register: " + open(os.path.join(root, "coordinator.log")).read())
            time.sleep(0.2)
        yield svc
        svc.stop()


@pytest.fixture()
def client(service):
    from attune_client import Client
    with Client(service.address, token=service.token) as c:
        yield c
