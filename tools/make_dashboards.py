#!/usr/bin/env python3
"""Writes Attune's Grafana dashboards (deploy/grafana/training.json and
cluster.json, classic JSON model for file provisioning) from the panel lists
below: edit here, run it, commit both. With --check, exits 1 when the files on
disk differ. Every panel names the metrics it shows in its description
(docs/observability.md lists them)."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job_id=~"$job_id", rank=~"$rank"'
JOB = 'job_id=~"$job_id"'
SWEEP = 'sweep_id=~"$sweep_id"'

def panel(title, exprs, unit="short", kind="timeseries", w=12, h=8, desc="", stack=False, maxv=None, legend=None):
    targets = []
    for i, e in enumerate(exprs):
        expr, fmt = (e if isinstance(e, tuple) else (e, "{{job_id}} rank {{rank}}"))
        t = {"refId": chr(65 + i), "datasource": DS, "expr": expr, "legendFormat": fmt}
        if kind == "heatmap":
            t["format"] = "heatmap"
        targets.append(t)
    p = {"type": kind, "title": title, "description": desc, "datasource": DS,
         "gridPos": {"h": h, "w": w, "x": 0, "y": 0}, "targets": targets,
         "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {}}
    if maxv is not None:
        p["fieldConfig"]["defaults"]["max"] = maxv
        p["fieldConfig"]["defaults"]["min"] = 0
    if stack:
        p["fieldConfig"]["defaults"]["custom"] = {"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 40}
    if kind == "heatmap":
        p["options"] = {"calculate": False, "yAxis": {"unit": unit}, "color": {"mode": "scheme", "scheme": "Spectral"}}
    return p

def row(title):
    return {"type": "row", "title": title, "collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0}, "panels": []}

def layout(items):
    y = 0; x = 0; rowh = 0
    for p in items:
        g = p["gridPos"]
        if p["type"] == "row":
            if x: y += rowh; x = 0; rowh = 0
            g["y"] = y; y += 1; continue
        if x + g["w"] > 24:
            y += rowh; x = 0; rowh = 0
        g["x"] = x; g["y"] = y; x += g["w"]; rowh = max(rowh, g["h"])
    return items

def dsvar():
    return {"type": "datasource", "name": "datasource", "label": "Prometheus", "query": "prometheus", "hide": 0}

def qvar(name, query, label):
    return {"type": "query", "name": name, "label": label, "datasource": DS, "query": query, "refresh": 2,
            "multi": True, "includeAll": True, "allValue": ".*", "sort": 1, "hide": 0}

def dashboard(uid, title, tags, panels, variables, desc):
    return {"uid": uid, "title": title, "description": desc, "tags": tags, "editable": False, "graphTooltip": 1,
            "schemaVersion": 39, "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
            "timezone": "browser", "templating": {"list": variables}, "annotations": {"list": []},
            "panels": layout(panels), "links": []}

training = [
    row("Progress"),
    panel("Training loss", [f'attune_train_loss{{{SEL}}}'], desc="attune_train_loss: loss of the last optimizer step, per rank (all ranks report the same global loss)."),
    panel("Evaluation", [(f'max by (job_id, metric) (attune_eval_metric{{{JOB}, metric!~".*loss|perplexity|mse|mae"}})',
                          "{{job_id}} {{metric}}")],
          unit="percentunit", maxv=1,
          desc="attune_eval_metric of the last evaluation, every metric of the job's task but the losses and errors "
               "(the task catalog lists them: accuracy, f1, roc_auc, ... for sequence classification)."),
    panel("Evaluation loss", [(f'max by (job_id) (attune_eval_metric{{{JOB}, metric="loss"}})', "{{job_id}}")], w=8,
          desc="attune_eval_metric{metric=\"loss\"}: the task's loss on the validation set (mean cross-entropy for classification)."),
    panel("Learning rate", [(f'max by (job_id) (attune_train_learning_rate{{{JOB}}})', "{{job_id}}")], w=8,
          desc="attune_train_learning_rate: after warmup and decay."),
    panel("Progress", [(f'max by (job_id) (attune_train_global_step{{{JOB}}}) / max by (job_id) (attune_train_total_steps{{{JOB}}})', "{{job_id}}"),],
          unit="percentunit", kind="stat", w=4, maxv=1, desc="attune_train_global_step / attune_train_total_steps."),
    panel("Epoch", [(f'max by (job_id) (attune_train_epoch{{{JOB}}})', "{{job_id}}")], kind="stat", w=4,
          desc="attune_train_epoch: epochs done, fractional."),
    row("Throughput"),
    panel("Samples per second", [(f'sum by (job_id) (rate(attune_train_samples_total{{{SEL}}}[$__rate_interval]))', "{{job_id}}"),
                                 (f'max by (job_id) (attune_train_samples_per_second{{{JOB}}})', "{{job_id}} (trainer's window)")],
          unit="short", w=8, desc="rate(attune_train_samples_total) summed over ranks; attune_train_samples_per_second as the trainer measures it."),
    panel("Tokens per second", [(f'sum by (job_id) (rate(attune_train_tokens_total{{{SEL}}}[$__rate_interval]))', "{{job_id}}"),
                                (f'max by (job_id) (attune_train_tokens_per_second{{{JOB}}})', "{{job_id}} (trainer's window)")],
          w=8, desc="rate(attune_train_tokens_total) summed over ranks, and attune_train_tokens_per_second: non-padding tokens."),
    panel("Steps per second", [f'rate(attune_train_steps_total{{{SEL}}}[$__rate_interval])'], w=8,
          desc="rate(attune_train_steps_total) per rank."),
    panel("Step time", [(f'sum by (le) (increase(attune_train_step_duration_seconds_bucket{{{SEL}}}[$__rate_interval]))', "{{le}}")],
          unit="s", kind="heatmap", desc="attune_train_step_duration_seconds buckets, all selected ranks."),
    panel("Step time p50 / p99 by rank",
          [(f'histogram_quantile(0.5, sum by (le, job_id, rank) (rate(attune_train_step_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))', "{{job_id}} rank {{rank}} p50"),
           (f'histogram_quantile(0.99, sum by (le, job_id, rank) (rate(attune_train_step_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))', "{{job_id}} rank {{rank}} p99")],
          unit="s", desc="Quantiles of attune_train_step_duration_seconds."),
    panel("Where a step goes (seconds per step)",
          [(f'sum by (phase) (rate(attune_train_phase_seconds_total{{{SEL}}}[$__rate_interval])) / scalar(sum(rate(attune_train_steps_total{{{SEL}}}[$__rate_interval])))', "{{phase}}")],
          unit="s", stack=True, desc="attune_train_phase_seconds_total by phase (data, forward, backward, allreduce, optimizer) per step; data is the data-wait time."),
    panel("Data wait per step", [f'sum by (job_id, rank) (rate(attune_train_phase_seconds_total{{{SEL}, phase="data"}}[$__rate_interval])) / sum by (job_id, rank) (rate(attune_train_steps_total{{{SEL}}}[$__rate_interval]))'],
          unit="s", desc="attune_train_phase_seconds_total{phase=\"data\"}: sampling and collation before the forward pass."),
    row("Communication"),
    panel("Allreduce time", [(f'sum by (le) (increase(attune_allreduce_duration_seconds_bucket{{{SEL}}}[$__rate_interval]))', "{{le}}")],
          unit="s", kind="heatmap", desc="attune_allreduce_duration_seconds: gradient reduction per step, first bucket launched to last done."),
    panel("Allreduce p50 / p99 by rank",
          [(f'histogram_quantile(0.5, sum by (le, job_id, rank) (rate(attune_allreduce_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))', "{{job_id}} rank {{rank}} p50"),
           (f'histogram_quantile(0.99, sum by (le, job_id, rank) (rate(attune_allreduce_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))', "{{job_id}} rank {{rank}} p99")],
          unit="s", desc="Quantiles of attune_allreduce_duration_seconds."),
    panel("Allreduce bandwidth", [f'attune:allreduce_algbw_bytes:rate5m{{{SEL}}}', f'rate(attune_allreduce_bytes_total{{{SEL}}}[$__rate_interval])'],
          unit="Bps", w=8, desc="attune_allreduce_bytes_total over reduction time (algorithm bandwidth), and bytes per second of training."),
    panel("Allreduce hidden behind backward", [f'attune:allreduce_hidden:ratio5m{{{SEL}}}', (f'attune_allreduce_hidden_ratio{{{SEL}}}', "{{job_id}} rank {{rank}} since start")],
          unit="percentunit", w=8, maxv=1, desc="1 - attune_allreduce_exposed_seconds_total / attune_allreduce_duration_seconds_sum; attune_allreduce_hidden_ratio."),
    panel("Since the last collective", [f'time() - attune_collective_last_success_timestamp_seconds{{{SEL}}}'],
          unit="s", w=8, desc="time() - attune_collective_last_success_timestamp_seconds: a rank that hangs grows here."),
    panel("Stragglers: compute time relative to the median rank", [f'attune:train_compute_relative_to_median:ratio{{{SEL}}}'],
          unit="short", w=24, desc="Per-step work excluding allreduce wait (attune_train_phase_seconds_total), divided by the job's median rank. 1 = median."),
    row("Checkpoints and failures"),
    panel("Checkpoint age", [f'time() - attune_checkpoint_last_success_timestamp_seconds{{{SEL}}}'], unit="s", w=6,
          desc="time() - attune_checkpoint_last_success_timestamp_seconds (rank 0 writes checkpoints)."),
    panel("Checkpoint write time p99", [(f'histogram_quantile(0.99, sum by (le, job_id) (rate(attune_checkpoint_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))', "{{job_id}}")],
          unit="s", w=6, desc="attune_checkpoint_duration_seconds."),
    panel("Last committed step", [f'attune_checkpoint_last_step{{{SEL}}}'], kind="stat", w=4, desc="attune_checkpoint_last_step."),
    panel("Attempt", [(f'max by (job_id) (attune_train_attempt{{{JOB}}})', "{{job_id}}")], kind="stat", w=4,
          desc="attune_train_attempt: the job's attempt (generation); it grows by one per restart from a checkpoint."),
    panel("Trainer memory", [f'attune_trainer_resident_memory_bytes{{{SEL}}}'], unit="bytes", w=12,
          desc="attune_trainer_resident_memory_bytes: resident memory of each rank's trainer process."),
    panel("Trainer CPU (cores)", [f'rate(attune_trainer_cpu_seconds_total{{{SEL}}}[$__rate_interval])'], w=12,
          desc="rate(attune_trainer_cpu_seconds_total): CPU cores each rank's trainer keeps busy."),
    panel("NaN / Inf steps", [f'attune_train_nonfinite_total{{{SEL}}}'], kind="stat", w=4, desc="attune_train_nonfinite_total."),
]

cluster = [
    row("Jobs"),
    panel("Jobs by state", [("attune_coordinator_jobs", "{{state}}")], w=12, stack=True, desc="attune_coordinator_jobs."),
    panel("Queue depth", [("attune_coordinator_queue_depth", "waiting")], w=6, desc="attune_coordinator_queue_depth: QUEUED or RECOVERING jobs."),
    panel("Scheduling latency", [("histogram_quantile(0.5, sum by (le) (rate(attune_coordinator_scheduling_latency_seconds_bucket[$__rate_interval])))", "p50"),
                                 ("histogram_quantile(0.99, sum by (le) (rate(attune_coordinator_scheduling_latency_seconds_bucket[$__rate_interval])))", "p99")],
          unit="s", w=6, desc="attune_coordinator_scheduling_latency_seconds: eligible to placed."),
    panel("Restarts", [("increase(attune_coordinator_job_restarts_total[$__rate_interval])", "restarts")], w=8,
          desc="attune_coordinator_job_restarts_total."),
    panel("Trainer exits by code (1 h)", [("sum by (code) (increase(attune_worker_trainer_exits_total[1h]))", "exit {{code}}")], w=8,
          desc="attune_worker_trainer_exits_total: 0 success, 65 bad spec, 143 stopped by SIGTERM, others failures."),
    panel("Trainers running", [("sum(attune_worker_tasks_running)", "trainers")], kind="stat", w=8, desc="attune_worker_tasks_running summed over workers."),
    row("Workers"),
    panel("Workers by state", [("attune_coordinator_workers", "{{state}}")], w=8, stack=True, desc="attune_coordinator_workers: idle, busy, lost."),
    panel("Heartbeat age", [("attune_coordinator_worker_heartbeat_age_seconds", "{{worker}}")], unit="s", w=8,
          desc="attune_coordinator_worker_heartbeat_age_seconds: a worker is lost past the heartbeat timeout (10 s by default)."),
    panel("Targets up", [('up{job=~"attune-.*"}', "{{job}} {{instance}}")], w=8, desc="Prometheus's up for every Attune endpoint."),
    row("Coordinator API"),
    panel("gRPC requests", [("sum by (method, code) (rate(attune_coordinator_grpc_requests_total[$__rate_interval]))", "{{method}} {{code}}")],
          unit="reqps", w=8, desc="attune_coordinator_grpc_requests_total."),
    panel("gRPC errors", [('sum by (method, code) (rate(attune_coordinator_grpc_requests_total{code!="OK"}[$__rate_interval]))', "{{method}} {{code}}")],
          unit="reqps", w=8, desc="Non-OK codes of attune_coordinator_grpc_requests_total."),
    panel("gRPC latency p99", [("histogram_quantile(0.99, sum by (le, method) (rate(attune_coordinator_grpc_request_seconds_bucket[$__rate_interval])))", "{{method}}")],
          unit="s", w=8, desc="attune_coordinator_grpc_request_seconds."),
    row("Sweeps"),
    panel("Trial objective", [(f'attune_sweep_trial_objective{{{SWEEP}}}', "{{sweep_id}} trial {{trial}}")], w=12,
          desc="attune_sweep_trial_objective: each trial's objective (its last evaluation's, then its exported model's) "
               "over time; sweep_report.html plots it over steps."),
    panel("Best objective so far", [(f'attune_sweep_best_objective{{{SWEEP}}}', "{{sweep_id}}")], w=6,
          desc="attune_sweep_best_objective: the best completed trial's objective."),
    panel("Stopped early", [(f'attune_sweep_trials_stopped_early{{{SWEEP}}}', "{{sweep_id}}")], kind="stat", w=6,
          desc="attune_sweep_trials_stopped_early: trials stopped by ASHA or the median rule."),
    panel("Trials by state", [(f'attune_sweep_trials{{{SWEEP}}}', "{{sweep_id}} {{state}}")], w=24, stack=True,
          desc="attune_sweep_trials: pending, running, succeeded, failed, cancelled, stopped_early."),
    row("Processes"),
    panel("CPU by process (cores)", [('rate(process_cpu_seconds_total{job=~"attune-.*"}[$__rate_interval])', "{{job}} {{instance}}")],
          w=8, desc="rate(process_cpu_seconds_total) of the coordinator and each agent."),
    panel("Memory by process", [('process_resident_memory_bytes{job=~"attune-.*"}', "{{job}} {{instance}}")], unit="bytes",
          w=8, desc="process_resident_memory_bytes of the coordinator and each agent."),
    panel("Uptime", [('time() - process_start_time_seconds{job=~"attune-.*"}', "{{job}} {{instance}}")], unit="s", w=8,
          desc="time() - process_start_time_seconds."),
    panel("Versions", [("attune_build_info", "{{component}} {{version}} {{instance}}")], kind="table", w=24, h=6,
          desc="attune_build_info."),
]

d1 = dashboard("attune-training", "Attune / Training job", ["attune", "training"], training,
               [dsvar(), qvar("job_id", "label_values(attune_train_steps_total, job_id)", "Job"),
                qvar("rank", 'label_values(attune_train_steps_total{job_id=~"$job_id"}, rank)', "Rank")],
               "One fine-tuning job: loss and evaluation, throughput, step and allreduce times, overlap, stragglers, checkpoints.")
d2 = dashboard("attune-cluster", "Attune / Cluster", ["attune", "cluster"], cluster,
               [dsvar(), qvar("sweep_id", "label_values(attune_sweep_trials, sweep_id)", "Sweep")],
               "The coordinator: jobs by state, queue, scheduling, workers, sweeps, API latency and errors.")

def main():
    stale = []
    for name, d in (("training", d1), ("cluster", d2)):
        path = os.path.join(ROOT, "deploy/grafana", name + ".json")
        text = json.dumps(d, indent=2) + "\n"
        if "--check" in sys.argv:
            with open(path) as f:
                if f.read() != text:
                    stale.append(path)
        else:
            with open(path, "w") as f:
                f.write(text)
    if stale:
        print("stale, run tools/make_dashboards.py: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
