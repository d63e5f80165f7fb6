#!/usr/bin/env python3
"""Writes deploy/prometheus/rules.yml as a prometheus-operator PrometheusRule
(deploy/k8s/base/prometheus-rule.yaml). With --check, exits 1 when the file
on disk differs from what it would write."""
import os
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "deploy/prometheus/rules.yml")
DST = os.path.join(ROOT, "deploy/k8s/base/prometheus-rule.yaml")


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL) as literal blocks."""


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render():
    with open(SRC) as f:
        rules = yaml.safe_load(f)
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "attune", "labels": {"app.kubernetes.io/name": "attune",
                                                  "release": "kube-prometheus-stack"}},
        "spec": {"groups": rules["groups"]},
    }
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=150)
    return "# Generated from deploy/prometheus/rules.yml by tools/prometheus_rule.py; do not edit.\n" + body


def main():
    text = render()
    if "--check" in sys.argv:
        with open(DST) as f:
            if f.read() != text:
                print(f"{DST} is stale: run tools/prometheus_rule.py", file=sys.stderr)
                return 1
        print("prometheus-rule.yaml matches rules.yml")
        return 0
    with open(DST, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
