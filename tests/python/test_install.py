"""`pip install ./clients/python` works offline with Debian's pip and
setuptools, and generates the gRPC modules into the installed package."""
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_pip_install_offline_into_a_venv():
    with tempfile.TemporaryDirectory(prefix="attune_pip_") as tmp:
        # A copy with the checkout's layout, so the source tree stays clean.
        shutil.copytree(os.path.join(ROOT, "clients", "python"), os.path.join(tmp, "src", "clients", "python"),
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        shutil.copytree(os.path.join(ROOT, "proto"), os.path.join(tmp, "src", "proto"),
                        ignore=shutil.ignore_patterns("CMakeLists.txt"))
        venv = os.path.join(tmp, "venv")
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", venv], check=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        pip = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--no-build-isolation", "--no-index",
                              os.path.join(tmp, "src", "clients", "python")], env=env, cwd=tmp,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert pip.returncode == 0, pip.stdout.decode()[-3000:]
        check = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                                "import attune_client, os; from attune.v1 import sweep_pb2_grpc; "
                                "print(attune_client.Client.__name__, "
                                "os.path.isdir(os.path.join(os.path.dirname(attune_client.__file__), '_gen')))"],
                               env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert check.returncode == 0, check.stdout.decode()
        assert check.stdout.decode().split() == ["Client", "True"]
