"""Results: small dataclasses, not protos."""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


@dataclass
class Job:
    id: str
    name: str
    state: str
    message: str
    step: int
    total_steps: int
    generation: int
    restarts: int
    workers: List[str]
    last_eval: Dict[str, float]
    last_eval_step: int
    baseline: Dict[str, float]
    baseline_method: str
    created_unix_ms: int
    updated_unix_ms: int
    spec: Dict[str, Any]
    labels: Dict[str, str]
    output_dir: str
    # The identity that submitted it (its token's name); "" without tokens.
    owner: str = ""
    # Every evaluation, one row per event ({"step": ..., "loss": ..., "accuracy": ...}),
    # ready for pandas.DataFrame(job.eval_history); filled by Client.get / wait.
    eval_history: List[Dict[str, float]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    @property
    def model_dir(self) -> Optional[str]:
        """The exported model, once the job has SUCCEEDED."""
        return f"{self.output_dir}/model" if self.state == "SUCCEEDED" and self.output_dir else None


@dataclass
class Event:
    index: int
    unix_ms: int
    type: str  # STATE_CHANGED, PROGRESS, EVALUATION, CHECKPOINT, WORKER_LOST, RESTART, BASELINE
    state: str
    message: str
    generation: int
    step: int  # the progress step, or the evaluation's step
    metrics: Dict[str, float]
    progress: Dict[str, float]


@dataclass
class Worker:
    id: str
    host: str
    cpus: int
    gpus: int
    state: str
    labels: Dict[str, str]
    jobs: List[str]
    last_heartbeat_unix_ms: int


@dataclass
class Trial:
    trial: int
    job_id: str
    parameters: Dict[str, Any]
    state: str  # the job's state, or STOPPED_EARLY
    objective: Optional[float]
    best_objective: Optional[float]
    steps: int
    stopped_early: bool
    stopped_reason: str
    message: str
    curve: List[Dict[str, float]]


@dataclass
class Sweep:
    id: str
    name: str
    state: str  # RUNNING, SUCCEEDED, FAILED, CANCELLING, CANCELLED
    message: str
    objective: str
    goal: str
    trials: List[Trial]
    trial_steps: int
    best: Optional[Dict[str, Any]]  # trial, objective, model_dir, job_id

    @property
    def done(self) -> bool:
        return self.state in TERMINAL
