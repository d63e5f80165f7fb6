"""Runs docs/python.md's walk-through, as written, against a real coordinator
(data root: the checkout) and two agents, and checks what it printed and
wrote through an independent path: the accuracy of `attune predict`'s output
against the labels equals the job's reported accuracy."""
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from conftest import Service

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_the_docs_walkthrough_runs_and_its_numbers_are_true():
    doc = open(os.path.join(ROOT, "docs", "python.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert len(blocks) == 1
    out_dir = os.path.join(ROOT, "runs", "python-walkthrough")
    shutil.rmtree(out_dir, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="attune_walkthrough_") as tmp:
        svc = Service(tmp, data_root=ROOT, tokens=False)
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", ATTUNE_COORDINATOR=svc.address)
        env.pop("ATTUNE_TOKEN", None)
        try:
            script = os.path.join(tmp, "walkthrough.py")
            with open(script, "w") as f:
                f.write(blocks[0])
            run = subprocess.run([sys.executable, script], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, timeout=540)
            out = run.stdout.decode()
            assert run.returncode == 0, out[-4000:] + open(os.path.join(tmp, "coordinator.log")).read()[-3000:]
        finally:
            svc.stop()
    assert re.search(r"submitted j-\d+-\w+ QUEUED", out), out
    assert re.search(r"step 200: loss [0-9.]+  roc_auc [0-9.]+", out), out
    assert os.path.getsize(os.path.join(out_dir, "roc_auc.png")) > 1000
    assert re.search(r"\n\d+ files downloaded", out), out
    for name in os.listdir(os.path.join(out_dir, "model")):
        assert open(os.path.join(out_dir, "downloaded", "model", name), "rb").read() == \
            open(os.path.join(out_dir, "model", name), "rb").read(), name
    # What it printed is what the job reported...
    exported = eval(re.search(r"exported model: (\{.*\})", out).group(1))
    report = json.load(open(os.path.join(out_dir, "eval_report.json")))
    assert abs(exported["accuracy"] - report["final"]["accuracy"]) < 1e-4
    # ...and attune predict's labels, scored here against the file, agree with it.
    preds = [json.loads(line) for line in open(os.path.join(out_dir, "predictions.jsonl"))]
    with open(os.path.join(ROOT, "examples", "data", "fine_foods", "test.csv")) as f:
        gold = [row["score"] for row in csv.DictReader(f)]
    assert len(preds) == len(gold) == 1000
    accuracy = sum(p["label"] == g for p, g in zip(preds, gold)) / len(gold)
    assert abs(accuracy - report["final"]["accuracy"]) <= 0.001, (accuracy, report["final"]["accuracy"])
    shutil.rmtree(out_dir, ignore_errors=True)
