"""attune_client: the Python client of the Attune coordinator.

    pip install ./clients/python      (offline; --no-build-isolation uses Debian's setuptools)

The gRPC stubs are generated from ../../proto when the package is built
(protoc and grpc_python_plugin must be on the machine: Debian's
protobuf-compiler and protobuf-compiler-grpc); they are not committed."""
import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_stubs import generate  # noqa: E402


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        generate(os.path.join(self.build_lib, "attune_client", "_gen"))


setup(
    name="attune-client",
    version="0.1.0",
    description="Python client of the Attune fine-tuning service",
    packages=["attune_client"],
    python_requires=">=3.9",
    install_requires=["grpcio", "protobuf", "PyYAML"],
    cmdclass={"build_py": BuildWithStubs},
)
