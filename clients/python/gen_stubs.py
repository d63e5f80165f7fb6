#!/usr/bin/python3
"""Generates the Python protobuf and gRPC modules of proto/attune/v1 with
protoc and grpc_python_plugin (Debian's protobuf-compiler and
protobuf-compiler-grpc, the versions of python3-protobuf and python3-grpcio).

    gen_stubs.py OUT_DIR [PROTO_DIR]

Writes OUT_DIR/attune/v1/{job,coordinator,sweep}_pb2.py and *_pb2_grpc.py.
setup.py calls it when the package is built; CMake calls it into build/python
for the tests."""
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOS = ("job", "coordinator", "sweep")


def generate(out_dir, proto_dir=os.path.join(HERE, "..", "..", "proto")):
    out_dir = os.path.abspath(out_dir)
    plugin = shutil.which("grpc_python_plugin") or "/usr/bin/grpc_python_plugin"
    os.makedirs(os.path.join(out_dir, "attune", "v1"), exist_ok=True)
    files = [os.path.join("attune", "v1", p + ".proto") for p in PROTOS]
    subprocess.run(["protoc", "-I", ".", f"--python_out={out_dir}", f"--grpc_out={out_dir}",
                    f"--plugin=protoc-gen-grpc={plugin}", *files], cwd=proto_dir, check=True)
    for d in ("attune", os.path.join("attune", "v1")):
        open(os.path.join(out_dir, d, "__init__.py"), "a").close()


if __name__ == "__main__":
    generate(os.path.abspath(sys.argv[1]), *(os.path.abspath(a) for a in sys.argv[2:3]))
