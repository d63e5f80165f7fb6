#!/usr/bin/env python3
"""Prints the PromQL of every panel of the given Grafana dashboards, one per
line, with Grafana's variables replaced by values Prometheus accepts
($__rate_interval -> 1m, $job_id, $rank and $sweep_id -> .*). With --rules FILE it
writes them as recording rules instead, so that `promtool check rules`
parses every expression."""
import json
import sys


def queries(path):
    with open(path) as f:
        dash = json.load(f)
    out = []

    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                expr = t.get("expr", "")
                for var, value in (("$__rate_interval", "1m"), ("$job_id", ".*"), ("$rank", ".*"), ("$sweep_id", ".*")):
                    expr = expr.replace(var, value)
                if expr:
                    out.append((p.get("title", ""), " ".join(expr.split())))

    walk(dash.get("panels", []))
    return out


def main(argv):
    rules = None
    if len(argv) > 2 and argv[1] == "--rules":
        rules, argv = argv[2], argv[2:]
    found = [q for path in argv[1:] for q in queries(path)]
    if rules:
        with open(rules, "w") as f:
            f.write("groups:\n  - name: dashboard-queries\n    rules:\n")
            for i, (_, expr) in enumerate(found):
                f.write(f"      - record: dashboard_query_{i}\n        expr: {json.dumps(expr)}\n")
    else:
        for title, expr in found:
            print(f"{title}\t{expr}")


if __name__ == "__main__":
    main(sys.argv)
