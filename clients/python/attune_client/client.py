"""Client: the coordinator's job and sweep APIs over gRPC."""
import hashlib
import json
import os
import time
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterator, List, Optional, Union

import grpc
import yaml
from google.protobuf import json_format

from ._proto import coordinator_pb2, coordinator_pb2_grpc, job_pb2, sweep_pb2, sweep_pb2_grpc
from .errors import AttuneError, InvalidSpec, JobFailed, from_rpc_error
from .types import Event, Job, Sweep, Trial, Worker

Spec = Union[Dict[str, Any], str, Path]

# Spec fields holding paths: relative ones are made absolute against the
# current directory, as the CLI does.
_PATHS = (("model", "path"), ("model", "vocab"), ("data", "train"), ("data", "validation"), ("output_dir",))


def _load(spec: Spec) -> Dict[str, Any]:
    if isinstance(spec, dict):
        return json.loads(json.dumps(spec))  # a deep copy
    text = spec
    if isinstance(spec, Path) or (isinstance(spec, str) and "\n" not in spec and os.path.isfile(spec)):
        text = Path(spec).read_text()
    loaded = yaml.safe_load(text)
    if not isinstance(loaded, dict):
        raise InvalidSpec("spec: must be a mapping (a YAML or JSON object, a dict, or a file holding one)")
    return loaded


def _absolutize(d: Dict[str, Any]) -> None:
    for path in _PATHS:
        parent = d
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and isinstance(parent.get(path[-1]), str) and parent[path[-1]]:
            parent[path[-1]] = os.path.abspath(parent[path[-1]])


def _parse(message, d: Dict[str, Any], what: str):
    try:
        return json_format.ParseDict(d, message)
    except json_format.ParseError as e:
        raise InvalidSpec(f"{what}: {e}") from None


def _dict(message) -> Dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _job(p, history=None) -> Job:
    spec = _dict(p.spec)
    return Job(id=p.id, name=p.spec.name, state=coordinator_pb2.JobState.Name(p.state), message=p.message,
               step=p.progress.step, total_steps=p.progress.total_steps, generation=p.generation,
               restarts=p.restarts, workers=list(p.workers), last_eval=dict(p.last_eval.values),
               last_eval_step=p.last_eval.step, baseline=dict(p.baseline.values),
               baseline_method=p.baseline_method, created_unix_ms=p.created_unix_ms,
               updated_unix_ms=p.updated_unix_ms, spec=spec, labels=dict(p.spec.labels),
               output_dir=p.spec.output_dir, owner=p.owner, eval_history=history or [])


def _event(e) -> Event:
    typ = coordinator_pb2.JobEvent.Type.Name(e.type)
    step = e.metrics.step if typ in ("EVALUATION", "BASELINE") else e.progress.step
    return Event(index=e.index, unix_ms=e.unix_ms, type=typ, state=coordinator_pb2.JobState.Name(e.state),
                 message=e.message, generation=e.generation, step=step, metrics=dict(e.metrics.values),
                 progress=_dict(e.progress))


def _sweep(s) -> Sweep:
    trials = []
    for t in s.trials:
        state = coordinator_pb2.JobState.Name(t.state)
        if t.stopped_early and state == "CANCELLED":
            state = "STOPPED_EARLY"
        trials.append(Trial(trial=t.trial, job_id=t.job_id,
                            parameters={k: json_format.MessageToDict(v) for k, v in t.parameters.items()},
                            state=state, objective=t.objective if t.HasField("objective") else None,
                            best_objective=t.best_objective if t.HasField("best_objective") else None,
                            steps=t.steps, stopped_early=t.stopped_early, stopped_reason=t.stopped_reason,
                            message=t.message, curve=[{"step": c.step, "value": c.value} for c in t.curve]))
    best = None
    if s.HasField("best"):
        best = {"trial": s.best.trial, "objective": s.best.objective, "model_dir": s.best.model_dir,
                "job_id": s.best.job_id}
    return Sweep(id=s.id, name=s.spec.name, state=sweep_pb2.SweepState.Name(s.state).replace("SWEEP_", ""),
                 message=s.message, objective=s.spec.objective.metric, goal=s.spec.objective.goal, trials=trials,
                 trial_steps=s.trial_steps, best=best)


class Client:
    """A connection to an Attune coordinator.

    address: HOST:PORT (default $ATTUNE_COORDINATOR, else 127.0.0.1:50051).
    token: a bearer token (default $ATTUNE_TOKEN).
    tls: None for plaintext, or {"ca": PEM file, "cert": PEM file, "key": PEM file} (cert and key for mTLS).
    timeout: seconds for each call (streams: none unless given).
    """

    def __init__(self, address: Optional[str] = None, token: Optional[str] = None,
                 tls: Optional[Dict[str, str]] = None, timeout: float = 10.0):
        self.address = address or os.environ.get("ATTUNE_COORDINATOR") or "127.0.0.1:50051"
        self.token = token if token is not None else os.environ.get("ATTUNE_TOKEN")
        self.timeout = timeout
        options = [("grpc.max_receive_message_length", 16 << 20), ("grpc.keepalive_time_ms", 10000),
                   ("grpc.keepalive_timeout_ms", 5000)]
        if tls:
            read = lambda k: Path(tls[k]).read_bytes() if tls.get(k) else None  # noqa: E731
            creds = grpc.ssl_channel_credentials(read("ca"), read("key"), read("cert"))
            self._channel = grpc.secure_channel(self.address, creds, options)
        else:
            self._channel = grpc.insecure_channel(self.address, options)
        self._jobs = coordinator_pb2_grpc.JobServiceStub(self._channel)
        self._sweeps = sweep_pb2_grpc.SweepServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- plumbing -----------------------------------------------------------
    def _metadata(self):
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def _call(self, method, request, timeout=None):
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata())
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.address) from None

    # --- jobs ---------------------------------------------------------------
    def submit(self, spec: Spec, idempotency_key: Optional[str] = None) -> Job:
        """Submits a job spec: a dict, YAML or JSON text, or a file. Relative paths in it are relative to the
        current directory. Raises InvalidSpec naming the bad fields."""
        d = _load(spec)
        _absolutize(d)
        req = coordinator_pb2.SubmitJobRequest(spec=_parse(job_pb2.JobSpec(), d, "spec"),
                                               idempotency_key=idempotency_key or f"py-{os.urandom(8).hex()}")
        return _job(self._call(self._jobs.SubmitJob, req))

    def get(self, job_id: str, history: bool = True) -> Job:
        """The job now; with `history`, its evaluations as `eval_history` rows."""
        job = _job(self._call(self._jobs.GetJob, coordinator_pb2.GetJobRequest(job_id=job_id)))
        if history:
            job.eval_history = self.eval_history(job_id)
        return job

    def events(self, job_id: str, from_index: int = 0) -> List[Event]:
        """The job's stored events from `from_index`, without waiting."""
        out: List[Event] = []
        while True:
            resp = self._call(self._jobs.ListJobEvents,
                              coordinator_pb2.ListJobEventsRequest(job_id=job_id, from_index=from_index))
            out += [_event(e) for e in resp.events]
            if not resp.events:
                return out
            from_index = resp.next_index

    def eval_history(self, job_id: str) -> List[Dict[str, float]]:
        """One row per evaluation: {"step": S, "<metric>": value, ...}; pandas.DataFrame takes it as is."""
        return [{"step": e.step, **e.metrics} for e in self.events(job_id) if e.type == "EVALUATION"]

    def list(self, state: Optional[str] = None, selector: Optional[str] = None) -> List[Job]:
        """Every job (paged under the hood), optionally in one state or with one label (key=value)."""
        req = coordinator_pb2.ListJobsRequest(label_selector=selector or "", page_size=500)
        if state:
            try:
                req.state = coordinator_pb2.JobState.Value(state.upper())
            except ValueError:
                raise InvalidSpec(f"state: '{state}' is not a job state (QUEUED, RUNNING, SUCCEEDED, ...)") from None
        jobs: List[Job] = []
        while True:
            resp = self._call(self._jobs.ListJobs, req)
            jobs += [_job(j) for j in resp.jobs]
            if not resp.next_page_token:
                return jobs
            req.page_token = resp.next_page_token

    def cancel(self, job_id: str) -> Job:
        return _job(self._call(self._jobs.CancelJob, coordinator_pb2.CancelJobRequest(job_id=job_id)))

    def watch(self, job_id: str, from_index: int = 0, timeout: Optional[float] = None) -> Iterator[Event]:
        """The job's events from `from_index` as they happen, until it ends. A coordinator restart is
        ridden out: the stream resumes from the last event seen."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in range(30):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                for e in self._jobs.WatchJob(coordinator_pb2.WatchJobRequest(job_id=job_id, from_index=from_index),
                                             timeout=left, metadata=self._metadata()):
                    from_index = e.index + 1
                    yield _event(e)
                return
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise from_rpc_error(e, self.address) from None
                time.sleep(1)
        raise AttuneError(f"lost the coordinator {self.address} while watching {job_id}")

    def wait(self, job_id: str, timeout: Optional[float] = None) -> Job:
        """Blocks until the job ends. Returns it when it SUCCEEDED; raises JobFailed (with the job and its
        cause) when it FAILED or was CANCELLED, DeadlineExceeded after `timeout` seconds."""
        for _ in self.watch(job_id, timeout=timeout):
            pass
        job = self.get(job_id)
        if job.state != "SUCCEEDED":
            raise JobFailed(job)
        return job

    def logs(self, job_id: str, rank: Optional[int] = None, tail: int = 200, follow: bool = False,
             poll: float = 0.5) -> Iterator[str]:
        """Log lines ("[rank R] text"); with `follow`, new ones as they come until the job ends."""
        req = coordinator_pb2.GetJobLogsRequest(job_id=job_id, rank=-1 if rank is None else rank, tail=tail)
        while True:
            resp = self._call(self._jobs.GetJobLogs, req)
            for line in resp.lines:
                yield f"[rank {line.rank}] {line.line}"
            if not follow:
                return
            if resp.lines:
                req.after_seq = resp.lines[-1].seq
            req.tail = 0
            if not resp.lines:
                if self.get(job_id, history=False).done:
                    return
                time.sleep(poll)

    def download(self, job_id: str, dest: Optional[str] = None, what: str = "model") -> List[str]:
        """Writes a SUCCEEDED job's "model", "reports" or "all" under `dest` (default ./JOB_ID), checking each
        file's SHA-256 against the coordinator's, and returns the paths written."""
        dest = dest or job_id
        written: List[str] = []
        current, f, h, n, target = None, None, None, 0, None
        try:
            for c in self._jobs.GetArtifact(coordinator_pb2.GetArtifactRequest(job_id=job_id, what=what),
                                            metadata=self._metadata()):
                if c.path != current:
                    if current is not None:
                        raise AttuneError(f"{current}: ended without its checksum")
                    rel = PurePosixPath(c.path)
                    if not c.path or rel.is_absolute() or any(p in ("..", ".") for p in rel.parts):
                        raise AttuneError(f"the coordinator sent an unsafe path {c.path!r}; refused")
                    current, target = c.path, os.path.join(dest, *rel.parts)
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    f, h, n = open(target, "wb"), hashlib.sha256(), 0
                if c.offset != n:
                    raise AttuneError(f"{current}: chunks out of order")
                f.write(c.data)
                h.update(c.data)
                n += len(c.data)
                if c.last:
                    f.close()
                    f = None
                    if h.hexdigest() != c.sha256 or n != c.size:
                        os.remove(target)
                        raise AttuneError(f"{current}: SHA-256 or size mismatch; the file was removed")
                    written.append(target)
                    current = None
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.address) from None
        finally:
            if f is not None:
                f.close()
        if current is not None:
            raise AttuneError(f"{current}: the stream ended mid-file")
        return written

    def workers(self) -> List[Worker]:
        resp = self._call(self._jobs.ListWorkers, coordinator_pb2.ListWorkersRequest())
        return [Worker(id=w.worker_id, host=w.host, cpus=w.cpus, gpus=w.gpus,
                       state=coordinator_pb2.WorkerStatus.State.Name(w.state), labels=dict(w.labels),
                       jobs=list(w.jobs), last_heartbeat_unix_ms=w.last_heartbeat_unix_ms) for w in resp.workers]

    # --- sweeps -------------------------------------------------------------
    def submit_sweep(self, sweep: Spec, idempotency_key: Optional[str] = None) -> Sweep:
        """Submits a sweep file (docs/sweeps.md): a dict, YAML text or a file."""
        d = _load(sweep)
        if isinstance(d.get("spec"), dict):
            _absolutize(d["spec"])
        req = sweep_pb2.SubmitSweepRequest(spec=_parse(sweep_pb2.SweepSpec(), d, "sweep"),
                                           idempotency_key=idempotency_key or f"py-{os.urandom(8).hex()}")
        return _sweep(self._call(self._sweeps.SubmitSweep, req))

    def get_sweep(self, sweep_id: str) -> Sweep:
        return _sweep(self._call(self._sweeps.GetSweep, sweep_pb2.GetSweepRequest(sweep_id=sweep_id)))

    def list_sweeps(self) -> List[Sweep]:
        return [_sweep(s) for s in self._call(self._sweeps.ListSweeps, sweep_pb2.ListSweepsRequest()).sweeps]

    def cancel_sweep(self, sweep_id: str) -> Sweep:
        return _sweep(self._call(self._sweeps.CancelSweep, sweep_pb2.CancelSweepRequest(sweep_id=sweep_id)))

    def wait_sweep(self, sweep_id: str, timeout: Optional[float] = None) -> Sweep:
        """Blocks until the sweep ends and returns it (whatever its state)."""
        try:
            last = None
            for s in self._sweeps.WatchSweep(sweep_pb2.WatchSweepRequest(sweep_id=sweep_id), timeout=timeout,
                                             metadata=self._metadata()):
                last = s
            return _sweep(last) if last is not None else self.get_sweep(sweep_id)
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.address) from None
