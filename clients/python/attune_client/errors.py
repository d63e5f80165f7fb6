"""Exceptions, one per gRPC status code a user can act on."""
import re

import grpc


class AttuneError(Exception):
    """A call failed. `code` is the gRPC status code, `details` the server's message."""

    def __init__(self, details, code=None):
        super().__init__(details)
        self.details = details
        self.code = code


class InvalidSpec(AttuneError):
    """The spec (or a sweep file) was refused. `fields` lists the field paths named in the message."""

    def __init__(self, details, code=None):
        super().__init__(details, code)
        self.fields = _field_paths(details)


class NotFound(AttuneError):
    pass


class AlreadyExists(AttuneError):
    pass


class Unauthenticated(AttuneError):
    pass


class PermissionDenied(AttuneError):
    pass


class FailedPrecondition(AttuneError):
    """The object is in the wrong state for the call (cancelling a finished job, an output_dir in use)."""


class Unavailable(AttuneError):
    """The coordinator could not be reached (wrong address, or it is restarting)."""


class DeadlineExceeded(AttuneError):
    pass


class JobFailed(AttuneError):
    """`wait` saw the job end FAILED or CANCELLED. `job` is the final Job; its message is the cause."""

    def __init__(self, job):
        super().__init__(f"job {job.id} {job.state}: {job.message}")
        self.job = job


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidSpec,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def _field_paths(details):
    # "a.b: reason; c: reason" or "source: a.b: reason": each "path:" before a reason.
    paths = []
    for part in details.split("; "):
        for token in re.findall(r"([A-Za-z_][A-Za-z0-9_.\[\]/-]*(?: = [^:]+)?):", part):
            name = token.split(" = ")[0]
            if "/" in name or name.endswith((".yaml", ".json", ".yml")) or name == "trial spec":
                continue
            paths.append(name)
            break
    return paths


def from_rpc_error(e: grpc.RpcError, address: str = ""):
    code, details = e.code(), e.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and address:
        details = f"coordinator {address} unavailable: {details}"
    return _BY_CODE.get(code, AttuneError)(details, code)
