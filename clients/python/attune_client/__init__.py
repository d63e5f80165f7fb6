"""attune_client: submit, watch and fetch Attune fine-tuning jobs and sweeps from Python.

    from attune_client import Client
    c = Client("127.0.0.1:50051")
    job = c.submit("examples/fine_foods.yaml")
    job = c.wait(job.id)
    import pandas as pd; pd.DataFrame(job.eval_history)

docs/python.md walks through it."""
from .client import Client
from .errors import (AlreadyExists, AttuneError, DeadlineExceeded, FailedPrecondition, InvalidSpec, JobFailed,
                     NotFound, PermissionDenied, Unauthenticated, Unavailable)
from .types import Event, Job, Sweep, Trial, Worker

__all__ = ["Client", "Job", "Event", "Worker", "Sweep", "Trial", "AttuneError", "InvalidSpec", "NotFound",
           "AlreadyExists", "Unauthenticated", "PermissionDenied", "FailedPrecondition", "Unavailable",
           "DeadlineExceeded", "JobFailed"]
