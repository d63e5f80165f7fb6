"""The generated modules: inside the installed package (_gen/), or on
PYTHONPATH (build/python, which CMake writes)."""
import os
import sys

_GEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_gen")
if os.path.isdir(_GEN) and _GEN not in sys.path:
    sys.path.insert(0, _GEN)

try:
    from attune.v1 import coordinator_pb2, coordinator_pb2_grpc, job_pb2, sweep_pb2, sweep_pb2_grpc  # noqa: F401
except ImportError as e:  # pragma: no cover - a packaging error, not a runtime one
    raise ImportError(
        "attune_client: the generated gRPC modules are missing. Install the package with "
        "`pip install ./clients/python`, or put build/python (written by the CMake build) on PYTHONPATH."
    ) from e
