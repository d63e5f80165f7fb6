"""attune_client against a real coordinator and agents (conftest.py)."""
import os
import time

import pytest

import attune_client
from attune_client import Client


def test_submit_wait_and_read_a_job(client, service):
    job = client.submit(service.spec("py-ok", labels={"team": "py"}))
    assert job.state == "QUEUED" and job.id.startswith("j-")
    done = client.wait(job.id, timeout=180)
    assert done.state == "SUCCEEDED"
    assert done.model_dir == service.root + "/out-py-ok/model"
    # The history: one row per evaluation, ready for pandas; the last is the exported model's.
    hist = done.eval_history
    assert len(hist) >= 3
    assert [r["step"] for r in hist[:3]] == [10, 20, 30]
    assert set(hist[0]) >= {"step", "loss", "accuracy", "f1", "roc_auc"}
    assert {k: v for k, v in hist[-1].items() if k != "step"} == done.last_eval
    assert done.step == 30
    # Events, listing, labels, workers.
    types = [e.type for e in client.events(job.id)]
    assert types[0] == "STATE_CHANGED" and "EVALUATION" in types and "PROGRESS" in types
    assert [j.id for j in client.list(selector="team=py")] == [job.id]
    assert job.id in [j.id for j in client.list(state="SUCCEEDED")]
    workers = client.workers()
    assert sorted(w.id for w in workers) == ["w0", "w1"] and all(w.cpus == 1 for w in workers)
    lines = list(client.logs(job.id))
    assert lines and all(line.startswith("[rank 0] ") for line in lines)
    # Its model and reports over the API, byte for byte.
    got = client.download(job.id, os.path.join(service.root, "dl"), what="all")
    model_files = sorted(os.listdir(os.path.join(service.root, "out-py-ok", "model")))
    assert sorted(os.path.basename(p) for p in got if "/model/" in p) == model_files
    for p in got:
        rel = os.path.relpath(p, os.path.join(service.root, "dl"))
        assert open(p, "rb").read() == open(os.path.join(service.root, "out-py-ok", rel), "rb").read(), rel
    assert {os.path.basename(p) for p in got} >= {"eval_report.json", "data_report.json", "config.json"}
    # The same key returns the same job.
    a = client.submit(service.spec("py-idem"), idempotency_key="k-1")
    assert client.submit(service.spec("py-idem"), idempotency_key="k-1").id == a.id
    client.wait(a.id, timeout=180)


def test_a_bad_spec_raises_invalid_spec_naming_the_fields(client, service):
    bad = service.spec("py-bad")
    bad["hyperparameters"]["batch_size"] = 0
    bad["method"]["type"] = "bogus"
    with pytest.raises(attune_client.InvalidSpec) as e:
        client.submit(bad)
    assert "hyperparameters.batch_size" in e.value.fields
    assert "method.type" in e.value.fields
    typo = service.spec("py-typo")
    typo["hyperparameters"]["batch_sise"] = 4
    with pytest.raises(attune_client.InvalidSpec, match="batch_sise"):
        client.submit(typo)
    assert not [j for j in client.list() if j.name in ("py-bad", "py-typo")]  # nothing stored


def test_a_wrong_token_raises_unauthenticated(service):
    with Client(service.address, token="not-the-token") as c:
        with pytest.raises(attune_client.Unauthenticated):
            c.list()
    with Client(service.address, token="") as c:
        with pytest.raises(attune_client.Unauthenticated):
            c.workers()


def test_wait_on_a_failing_job_raises_with_its_cause(client, service):
    # Labels the data does not have: every row is dropped and the trainer refuses to train.
    spec = service.spec("py-fails")
    spec["data"]["labels"] = ["x", "y"]
    job = client.submit(spec)
    with pytest.raises(attune_client.JobFailed) as e:
        client.wait(job.id, timeout=180)
    assert e.value.job.state == "FAILED"
    assert "rank 0 exited with code 65" in e.value.job.message
    assert e.value.job.message in str(e.value)


def test_cancel_not_found_and_follow_logs(client, service):
    job = client.submit(service.spec("py-long", steps=1000000))
    for event in client.watch(job.id, timeout=120):
        if event.type == "STATE_CHANGED" and event.state == "RUNNING":
            break
    deadline = time.monotonic() + 60
    while not list(client.logs(job.id)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.cancel(job.id).state == "CANCELLING"
    # Following the logs ends when the job does.
    lines = list(client.logs(job.id, rank=0, follow=True))
    assert client.get(job.id).state == "CANCELLED"
    assert any("stopping on request" in line for line in lines), lines  # its last words came through
    with pytest.raises(attune_client.FailedPrecondition, match="already CANCELLED"):
        client.cancel(job.id)
    with pytest.raises(attune_client.NotFound):
        client.get("j-000999-none")
    with pytest.raises(attune_client.DeadlineExceeded):
        list(client.watch(client.submit(service.spec("py-slow", steps=1000000)).id, timeout=1))
    client.cancel([j for j in client.list(state="RUNNING") + client.list(state="QUEUED")
                   + client.list(state="SCHEDULED") if j.name == "py-slow"][0].id)


def test_a_wrong_address_fails_within_the_timeout_naming_it():
    start = time.monotonic()
    with Client("127.0.0.1:1", timeout=3) as c:
        with pytest.raises(attune_client.Unavailable, match="127.0.0.1:1"):
            c.list()
    assert time.monotonic() - start < 10


def test_sweep_calls(client, service):
    sweep = client.submit_sweep({
        "name": "py-sweep", "spec": service.spec("py-sweep", steps=20),
        "parameters": {"hyperparameters.learning_rate": {"choice": [1e-3, 5e-3]}},
        "objective": {"metric": "roc_auc"}, "algorithm": {"type": "grid"}, "parallel_trials": 2})
    assert sweep.state == "RUNNING" and sweep.objective == "roc_auc" and sweep.goal == "max"
    done = client.wait_sweep(sweep.id, timeout=300)
    assert done.state == "SUCCEEDED", done.message
    assert [t.parameters["hyperparameters.learning_rate"] for t in done.trials] == [1e-3, 5e-3]
    assert all(t.state == "SUCCEEDED" and t.curve for t in done.trials)
    best = max(done.trials, key=lambda t: t.objective)
    assert done.best["trial"] == best.trial and done.best["objective"] == best.objective
    assert sweep.id in [s.id for s in client.list_sweeps()]
    assert client.get_sweep(sweep.id).best == done.best
    with pytest.raises(attune_client.InvalidSpec, match="parameters.method.typo"):
        client.submit_sweep({"name": "py-bad-sweep", "spec": service.spec("py-bad-sweep"),
                             "parameters": {"method.typo": {"choice": ["full"]}}, "objective": {"metric": "roc_auc"},
                             "algorithm": {"type": "grid"}})


class _Coordinator:
    """A coordinator of its own (no agents) with extra flags, for tests that must not disturb the shared one."""

    def __init__(self, tmp_path, *flags):
        from conftest import BIN, free_port
        import subprocess
        self.address = f"127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen([os.path.join(BIN, "attune-coordinator"), "--listen", self.address, "--state",
                                      str(tmp_path / "state.db"), *flags],
                                     stdout=open(tmp_path / "coordinator.log", "w"), stderr=subprocess.STDOUT)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)


def _reflection_list(address):
    """Asks a server's gRPC reflection service (v1 and v1alpha) to list its services, as grpcurl does; raw
    bytes, so that the test needs no reflection package: field 7 (list_services) = ""."""
    import grpc
    with grpc.insecure_channel(address) as ch:
        for version in ("v1", "v1alpha"):
            call = ch.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                    request_serializer=lambda b: b, response_deserializer=lambda b: b)
            try:
                return list(call(iter([b"\x3a\x00"]), timeout=5))
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
    return None


def test_reflection_answers_only_when_turned_on(service, tmp_path):
    # Reflection answers without a token, so a coordinator serves it only with --grpc-reflection.
    assert _reflection_list(service.address) is None
    with _Coordinator(tmp_path, "--grpc-reflection") as coordinator:
        deadline = time.monotonic() + 30
        while True:
            try:
                replies = _reflection_list(coordinator.address)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert replies and any(b"attune.v1.JobService" in r for r in replies)


def test_registrations_are_bounded_and_checked(tmp_path):
    # A worker token can register agents; a flood of made-up ids is slowed down (RESOURCE_EXHAUSTED, which
    # agents retry), a malformed one is refused naming the field, and the coordinator keeps serving.
    import grpc
    from attune_client._proto import coordinator_pb2, coordinator_pb2_grpc
    (tmp_path / "worker.tokens").write_text("tok-worker\n")
    (tmp_path / "submit.tokens").write_text("alice tok-alice\n")
    with _Coordinator(tmp_path, "--worker-token-file", str(tmp_path / "worker.tokens"), "--submit-token-file",
                      str(tmp_path / "submit.tokens"), "--registrations-per-s", "5") as coordinator:
        address = coordinator.address
        channel = grpc.insecure_channel(address)
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = coordinator_pb2_grpc.WorkerServiceStub(channel)
        md = [("authorization", "Bearer tok-worker")]
        with pytest.raises(grpc.RpcError) as bad:
            stub.Register(coordinator_pb2.RegisterRequest(worker_id="../../x", cpus=1), metadata=md, timeout=5)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "worker_id" in bad.value.details()
        with pytest.raises(grpc.RpcError) as big:
            stub.Register(coordinator_pb2.RegisterRequest(worker_id="w", cpus=1, host="h" * 300), metadata=md, timeout=5)
        assert big.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "host" in big.value.details()
        with pytest.raises(grpc.RpcError) as newline:
            stub.Register(coordinator_pb2.RegisterRequest(worker_id="w", cpus=1, host="10.0.0.1\nw9  fake"),
                          metadata=md, timeout=5)
        assert newline.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "host: must be a host name" in newline.value.details()
        codes = []
        for i in range(200):
            try:
                stub.Register(coordinator_pb2.RegisterRequest(worker_id=f"flood-{i}", cpus=1), metadata=md, timeout=5)
                codes.append("OK")
            except grpc.RpcError as e:
                codes.append(e.code().name)
        assert set(codes) == {"OK", "RESOURCE_EXHAUSTED"}
        assert codes.count("OK") < 100  # a burst of 25 and 5/s, not all 200
        with Client(address, token="tok-alice", timeout=5) as c:
            assert len(c.workers()) == codes.count("OK")
        channel.close()


def test_a_submitter_sees_and_touches_only_its_own_jobs(tmp_path, service):
    # Token-file lines "NAME TOKEN": the name is the owner of what it submits.
    (tmp_path / "submit.tokens").write_text("alice tok-alice\nbob tok-bob\n")
    (tmp_path / "admin.tokens").write_text("ops tok-ops\n")
    with _Coordinator(tmp_path, "--submit-token-file", str(tmp_path / "submit.tokens"), "--admin-token-file",
                      str(tmp_path / "admin.tokens")) as coordinator:
        alice = Client(coordinator.address, token="tok-alice", timeout=5)
        bob = Client(coordinator.address, token="tok-bob", timeout=5)
        ops = Client(coordinator.address, token="tok-ops", timeout=5)
        deadline = time.monotonic() + 30
        while True:
            try:
                alice.list()
                break
            except attune_client.AttuneError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        job = alice.submit(service.spec("owned", output_dir=str(tmp_path / "out-owned")))
        assert job.owner == "alice" and alice.get(job.id).owner == "alice"
        for call in (lambda: bob.get(job.id), lambda: bob.cancel(job.id),
                     lambda: bob.download(job.id, str(tmp_path / "stolen")), lambda: list(bob.logs(job.id))):
            with pytest.raises(attune_client.PermissionDenied, match="belongs to another submitter"):
                call()
        assert not (tmp_path / "stolen").exists()
        assert [j.id for j in bob.list()] == []
        assert [j.id for j in alice.list()] == [job.id]
        assert [j.id for j in ops.list()] == [job.id]  # an admin sees everyone's
        assert ops.cancel(job.id).id == job.id
        for c in (alice, bob, ops):
            c.close()
