#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "worker/comm/communicator.h"
#include "worker/comm/kv_store.h"
#include "worker/comm/torch_logging.h"

#ifdef ATTUNE_WITH_NCCL
#include <cuda_runtime_api.h>
#include <nccl.h>
#ifdef ATTUNE_CUDA
#include <c10/cuda/CUDAStream.h>
#endif
#endif

// NOTE [NCCL communicator]: how the NCCL backend works.
//   1. Rendezvous as Gloo does (JoinRendezvous: rank 0's store on its host
//      only, every rank arrived); rank 0 makes the ncclUniqueId and sets it
//      under "attune/nccl/id"; the others wait for it, bounded by the timeout.
//   2. One communicator per trainer process, that is per job generation
//      (the agent starts new trainers for every attempt), created
//      non-blocking (config.blocking = 0) so that its initialisation is
//      polled against the deadline, never waited on without end.
//   3. Collectives run on the communicator's own non-blocking CUDA stream.
//      A CUDA tensor on the rank's device is reduced in place: an event
//      recorded on the compute stream (libtorch's current stream in a CUDA
//      build) orders the collective after the kernels that wrote it, and the
//      compute stream waits on the collective's own event before later
//      kernels read it. A host tensor (losses, metric gathers, and every
//      tensor in a CPU-only libtorch build) is staged: copied to a device
//      buffer, reduced, copied back in Wait(); before staging, the stream
//      must be idle (polled, bounded), so that no copy can block behind a
//      hung collective.
//   4. Work::Wait polls the collective's event and ncclCommGetAsyncError;
//      past the timeout, or on an asynchronous error, the communicator is
//      aborted with ncclCommAbort and every later call fails with kAborted.
//      Abort() from another thread (a watchdog) only raises a flag: the
//      thread that polls aborts the communicator, so no thread uses it after
//      it is freed.
//   5. Errors map to Status: ncclInvalidArgument / ncclInvalidUsage ->
//      kInvalidArgument, ncclRemoteError / ncclSystemError -> kUnavailable,
//      the rest -> kInternal, each naming the op, the job, the rank and
//      NCCL's last error.

namespace attune::worker::comm {

#ifndef ATTUNE_WITH_NCCL

absl::Status CheckNcclBackend(const CommunicatorOptions& o) {
  return absl::FailedPreconditionError(
      absl::StrCat("job=", o.job, " rank=", o.rank, ": workers.backend nccl: this build has no NCCL (nccl.h not found)"));
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(const CommunicatorOptions& o) {
  return CheckNcclBackend(o);
}

#else

namespace {

using Clock = std::chrono::steady_clock;

std::string Who(const CommunicatorOptions& o) { return absl::StrCat("job=", o.job, " rank=", o.rank); }

absl::StatusCode CodeFor(ncclResult_t r) {
  switch (r) {
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return absl::StatusCode::kInvalidArgument;
    case ncclRemoteError:
    case ncclSystemError:
      return absl::StatusCode::kUnavailable;
    default:
      return absl::StatusCode::kInternal;
  }
}

absl::Status NcclStatus(ncclResult_t r, const CommunicatorOptions& o, const std::string& op, ncclComm_t comm) {
  const char* last = comm != nullptr ? ncclGetLastError(comm) : ncclGetLastError(nullptr);
  return absl::Status(CodeFor(r), absl::StrCat(Who(o), " nccl ", op, " failed: ", ncclGetErrorString(r),
                                               last != nullptr && *last != '\0' ? absl::StrCat(" (", last, ")") : ""));
}

absl::Status CudaStatus(cudaError_t e, const CommunicatorOptions& o, const std::string& op) {
  return absl::InternalError(absl::StrCat(Who(o), " nccl ", op, ": CUDA error ", cudaGetErrorName(e), ": ",
                                          cudaGetErrorString(e)));
}

// A cudaEventQuery / cudaStreamQuery answer: done, not yet, or an error.
absl::StatusOr<bool> Finished(cudaError_t e, const CommunicatorOptions& o, const std::string& op) {
  if (e == cudaSuccess) return true;
  if (e == cudaErrorNotReady) return false;
  return CudaStatus(e, o, op);
}

absl::StatusOr<ncclDataType_t> NcclType(const at::Tensor& t, const CommunicatorOptions& o, const std::string& op) {
  switch (t.scalar_type()) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kLong: return ncclInt64;
    case at::kInt: return ncclInt32;
    case at::kChar: return ncclInt8;
    case at::kByte: return ncclUint8;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(Who(o), " nccl ", op, ": dtype ", c10::toString(t.scalar_type()), " is not reducible by NCCL"));
  }
}

// The stream libtorch computes on: its current stream in a CUDA build; the
// legacy default stream otherwise (no CUDA kernels of libtorch's there).
cudaStream_t ComputeStream(int device) {
#ifdef ATTUNE_CUDA
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
#else
  (void)device;
  return nullptr;
#endif
}

// What the communicator and its works share.
struct NcclState {
  CommunicatorOptions o;
  int device = 0;
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  std::atomic<bool> abort_requested{false};
  bool aborted = false;  // the training thread's: comm is gone
  std::unique_ptr<KvServer> server;  // rank 0; the store must outlive the exchange

  // Abort rather than destroy: destroy waits for pending work, which a lost
  // peer never finishes. Works hold the state, so this runs after the last.
  ~NcclState() {
    cudaSetDevice(device);
    if (!aborted && comm != nullptr) ncclCommAbort(comm);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  // Aborts the communicator (on the polling thread only).
  absl::Status AbortNow(absl::Status why) {
    if (!aborted) {
      aborted = true;
      if (comm != nullptr) ncclCommAbort(comm);
      comm = nullptr;
      LOG(WARNING) << Who(o) << " nccl communicator aborted: " << why;
    }
    return why;
  }
  absl::Status Usable(const std::string& op) {
    if (abort_requested.load()) (void)AbortNow(absl::AbortedError(absl::StrCat(Who(o), " nccl ", op, ": aborted")));
    if (aborted) return absl::AbortedError(absl::StrCat(Who(o), " nccl ", op, ": the communicator was aborted"));
    return absl::OkStatus();
  }
  // Polls `done` until true, an async error, an abort or `timeout`; aborts on
  // all but the first.
  template <typename Done>
  absl::Status Poll(const std::string& op, absl::Duration timeout, Done done) {
    const auto deadline = Clock::now() + absl::ToChronoNanoseconds(timeout);
    while (true) {
      absl::StatusOr<bool> d = done();
      if (!d.ok()) return AbortNow(d.status());
      if (*d) return absl::OkStatus();
      ncclResult_t async = ncclSuccess;
      if (ncclResult_t r = ncclCommGetAsyncError(comm, &async); r != ncclSuccess) return AbortNow(NcclStatus(r, o, op, comm));
      if (async != ncclSuccess && async != ncclInProgress) return AbortNow(NcclStatus(async, o, op, comm));
      if (abort_requested.load()) return AbortNow(absl::AbortedError(absl::StrCat(Who(o), " nccl ", op, ": aborted")));
      if (Clock::now() > deadline) {
        return AbortNow(absl::DeadlineExceededError(absl::StrCat(
            Who(o), " nccl ", op, " timed out after ", absl::FormatDuration(timeout),
            "; the communicator is aborted (a peer is gone or behind)")));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  // A non-blocking NCCL call may answer ncclInProgress: poll until enqueued.
  absl::Status Settle(ncclResult_t r, const std::string& op) {
    if (r == ncclSuccess) return absl::OkStatus();
    if (r != ncclInProgress) return AbortNow(NcclStatus(r, o, op, comm));
    return Poll(op, o.timeout, [&]() -> absl::StatusOr<bool> {
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm, &async);
      return async != ncclInProgress;
    });
  }
};

class NcclWork : public Work {
 public:
  NcclWork(std::shared_ptr<NcclState> s, std::string op, cudaEvent_t done, at::Tensor out, void* staged, size_t bytes)
      : s_(std::move(s)), op_(std::move(op)), done_(done), out_(std::move(out)), staged_(staged), bytes_(bytes) {}
  ~NcclWork() override {
    if (staged_ != nullptr) cudaFreeAsync(staged_, s_->stream);
    if (done_ != nullptr) cudaEventDestroy(done_);
  }

  absl::Status Wait(absl::Duration timeout) override {
    if (finished_) return absl::OkStatus();
    if (auto u = s_->Usable(op_); !u.ok()) return u;
    cudaSetDevice(s_->device);
    absl::Status st = s_->Poll(op_, timeout, [&] { return Finished(cudaEventQuery(done_), s_->o, op_); });
    if (!st.ok()) return st;
    if (staged_ != nullptr) {
      // The stream passed this work's event: the copy back cannot block.
      if (cudaError_t e = cudaMemcpy(out_.data_ptr(), staged_, bytes_, cudaMemcpyDeviceToHost); e != cudaSuccess) {
        return s_->AbortNow(CudaStatus(e, s_->o, op_ + " copy back"));
      }
    } else if (cudaError_t e = cudaStreamWaitEvent(ComputeStream(s_->device), done_, 0); e != cudaSuccess) {
      return s_->AbortNow(CudaStatus(e, s_->o, op_));
    }
    finished_ = true;
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<NcclState> s_;
  std::string op_;
  cudaEvent_t done_;
  at::Tensor out_;  // the device tensor, alive until the collective is done; staged: where the result goes
  void* staged_;
  size_t bytes_;
  bool finished_ = false;
};

class NcclCommunicator : public Communicator {
 public:
  explicit NcclCommunicator(std::shared_ptr<NcclState> s) : s_(std::move(s)) {}

  int rank() const override { return s_->o.rank; }
  int world_size() const override { return s_->o.world_size; }
  std::string backend() const override { return "nccl"; }
  absl::Duration timeout() const override { return s_->o.timeout; }

  absl::StatusOr<std::unique_ptr<Work>> AllReduceSum(at::Tensor t) override {
    return Launch("allreduce", t, t, [&](const void* in, void* out, size_t n, ncclDataType_t type) {
      return ncclAllReduce(in, out, n, type, ncclSum, s_->comm, s_->stream);
    });
  }
  absl::StatusOr<std::unique_ptr<Work>> Broadcast(at::Tensor t, int root) override {
    if (root < 0 || root >= s_->o.world_size) {
      return absl::InvalidArgumentError(absl::StrCat(Who(s_->o), " nccl broadcast: root ", root, " is not a rank"));
    }
    return Launch("broadcast", t, t, [&](const void* in, void* out, size_t n, ncclDataType_t type) {
      return ncclBroadcast(in, out, n, type, root, s_->comm, s_->stream);
    });
  }
  absl::StatusOr<std::unique_ptr<Work>> ReduceScatterSum(at::Tensor input, at::Tensor output) override {
    if (auto st = CheckReduceScatter(*this, input, output); !st.ok()) return st;
    const size_t world = static_cast<size_t>(s_->o.world_size);
    // `count` is what is sent (world x the output's elements); NCCL takes the output's.
    return Launch("reduce_scatter", input, output, [&](const void* in, void* out, size_t n, ncclDataType_t type) {
      return ncclReduceScatter(in, out, n / world, type, ncclSum, s_->comm, s_->stream);
    });
  }
  absl::Status AllGatherInPlace(at::Tensor buffer) override {
    if (auto st = CheckAllGatherInPlace(*this, buffer); !st.ok()) return st;
    const int64_t n = buffer.numel() / s_->o.world_size;
    // NCCL's in-place form: the send buffer is the rank's block of the receive buffer.
    auto w = Launch("allgather", buffer.narrow(0, s_->o.rank * n, n), buffer,
                    [&](const void* src, void* dst, size_t count, ncclDataType_t type) {
                      return ncclAllGather(src, dst, count, type, s_->comm, s_->stream);
                    });
    if (!w.ok()) return w.status();
    return (*w)->Wait(s_->o.timeout);
  }
  absl::Status AllGather(const at::Tensor& input, std::vector<at::Tensor>* outputs) override {
    const int world = s_->o.world_size;
    at::Tensor in = input.contiguous();
    at::Tensor all = torch::empty({static_cast<int64_t>(world) * in.numel()}, in.options());
    auto w = Launch("allgather", in, all, [&](const void* src, void* dst, size_t n, ncclDataType_t type) {
      return ncclAllGather(src, dst, n, type, s_->comm, s_->stream);
    });
    if (!w.ok()) return w.status();
    if (auto st = (*w)->Wait(s_->o.timeout); !st.ok()) return st;
    outputs->clear();
    for (int r = 0; r < world; ++r) outputs->push_back(all.narrow(0, r * in.numel(), in.numel()).view(in.sizes()));
    return absl::OkStatus();
  }
  absl::Status Barrier() override {
    at::Tensor one = torch::ones({1}, torch::kFloat32);
    auto w = AllReduceSum(one);
    if (!w.ok()) return w.status();
    return (*w)->Wait(s_->o.timeout);
  }
  void Abort() override { s_->abort_requested.store(true); }

 private:
  // Runs `call(send, recv, count, type)` on the stream. `in` is what is sent
  // (count elements), `out` what receives (count, or count * world for
  // allgather); both on the rank's device, or both on the host (staged).
  template <typename Call>
  absl::StatusOr<std::unique_ptr<Work>> Launch(const std::string& op, const at::Tensor& in, const at::Tensor& out,
                                               Call call) {
    if (auto u = s_->Usable(op); !u.ok()) return u;
    if (!in.is_contiguous() || !out.is_contiguous() || in.is_sparse()) {
      return absl::InvalidArgumentError(absl::StrCat(Who(s_->o), " nccl ", op, ": the tensor must be contiguous and dense"));
    }
    if (in.is_cuda() != out.is_cuda() || (in.is_cuda() && (in.get_device() != s_->device || out.get_device() != s_->device))) {
      return absl::InvalidArgumentError(absl::StrCat(Who(s_->o), " nccl ", op, ": the tensor is on ", in.device().str(),
                                                     ", not this rank's cuda:", s_->device, " or the host"));
    }
    if (!in.is_cuda() && !in.is_cpu()) {
      return absl::InvalidArgumentError(absl::StrCat(Who(s_->o), " nccl ", op, ": tensors on ", in.device().str(),
                                                     " are not supported"));
    }
    auto type = NcclType(in, s_->o, op);
    if (!type.ok()) return type.status();
    cudaSetDevice(s_->device);
    const size_t count = static_cast<size_t>(in.numel());
    const size_t out_bytes = static_cast<size_t>(out.numel()) * out.element_size();
    void* staged = nullptr;
    const void* send = nullptr;
    void* recv = nullptr;
    if (in.is_cuda()) {
      // Order after the kernels that wrote the tensor.
      cudaEvent_t ready = nullptr;
      if (cudaError_t e = cudaEventCreateWithFlags(&ready, cudaEventDisableTiming); e != cudaSuccess) {
        return CudaStatus(e, s_->o, op);
      }
      cudaEventRecord(ready, ComputeStream(s_->device));
      cudaError_t e = cudaStreamWaitEvent(s_->stream, ready, 0);
      cudaEventDestroy(ready);
      if (e != cudaSuccess) return s_->AbortNow(CudaStatus(e, s_->o, op));
      send = in.data_ptr();
      recv = out.data_ptr();
    } else {
      // Staged: the stream must be idle first (bounded), then in -> device.
      absl::Status idle = s_->Poll(op, s_->o.timeout, [&] { return Finished(cudaStreamQuery(s_->stream), s_->o, op); });
      if (!idle.ok()) return idle;
      const size_t in_bytes = count * in.element_size();
      // In place (allreduce, broadcast): one buffer; allgather: the output,
      // then the input after it.
      // (Same start but other sizes, as a reduce-scatter into, or an
      // allgather from, rank 0's block of one buffer: not in place here.)
      const size_t offset = in.data_ptr() == out.data_ptr() && in.numel() == out.numel() ? 0 : out_bytes;
      if (cudaError_t e = cudaMallocAsync(&staged, offset == 0 ? out_bytes : out_bytes + in_bytes, s_->stream);
          e != cudaSuccess) {
        return CudaStatus(e, s_->o, op + " staging");
      }
      recv = staged;
      send = static_cast<char*>(staged) + offset;
      if (cudaError_t e = cudaMemcpyAsync(const_cast<void*>(send), in.data_ptr(), in_bytes, cudaMemcpyHostToDevice, s_->stream);
          e != cudaSuccess) {
        cudaFreeAsync(staged, s_->stream);
        return CudaStatus(e, s_->o, op + " staging");
      }
    }
    VLOG(2) << Who(s_->o) << " nccl " << op << " of " << count << " elements";
    if (auto st = s_->Settle(call(send, recv, count, *type), op); !st.ok()) {
      if (staged != nullptr) cudaFreeAsync(staged, s_->stream);
      return st;
    }
    cudaEvent_t done = nullptr;
    if (cudaError_t e = cudaEventCreateWithFlags(&done, cudaEventDisableTiming); e != cudaSuccess) {
      if (staged != nullptr) cudaFreeAsync(staged, s_->stream);
      return s_->AbortNow(CudaStatus(e, s_->o, op));
    }
    cudaEventRecord(done, s_->stream);
    return std::unique_ptr<Work>(new NcclWork(s_, op, done, out, staged, staged != nullptr ? out_bytes : 0));
  }

  std::shared_ptr<NcclState> s_;
};

}  // namespace

absl::StatusOr<int> UsableDevice(const CommunicatorOptions& o) {
  int nccl_version = 0;
  ncclGetVersion(&nccl_version);
  int devices = 0;
  cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        Who(o), ": workers.backend nccl needs a CUDA GPU, and none is usable here (",
        err != cudaSuccess ? cudaGetErrorString(err) : "0 devices", "; NCCL ", nccl_version,
        "). Use workers.backend: gloo on CPUs."));
  }
  const int device = o.device_index >= 0 ? o.device_index : o.rank % devices;
  if (device >= devices) {
    return absl::FailedPreconditionError(
        absl::StrCat(Who(o), ": nccl asks for cuda:", device, ", but only ", devices, " CUDA device(s) are visible"));
  }
  return device;
}

absl::Status CheckNcclBackend(const CommunicatorOptions& o) { return UsableDevice(o).status(); }

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(const CommunicatorOptions& o) {
  auto device = UsableDevice(o);
  if (!device.ok()) return device.status();
  int nccl_version = 0;
  ncclGetVersion(&nccl_version);
  auto s = std::make_shared<NcclState>();
  s->o = o;
  s->device = *device;
  auto joined = JoinRendezvous(o.job, o.rank, o.world_size, o.master_host, o.master_port, o.timeout,
                               o.rendezvous_secret);
  if (!joined.ok()) return joined.status();
  s->server = std::move(joined->server);
  // The unique id: made by rank 0, read by the others through the store.
  ncclUniqueId id;
  if (o.rank == 0) {
    if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) return NcclStatus(r, o, "unique id", nullptr);
    if (auto st = joined->client->Set("attune/nccl/id", std::string(id.internal, sizeof(id.internal))); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat(Who(o), " nccl: cannot publish the unique id: ", st.message()));
    }
  } else {
    auto got = joined->client->WaitGet("attune/nccl/id", o.timeout);
    if (!got.ok()) {
      return absl::Status(got.status().code(),
                          absl::StrCat(Who(o), " nccl: no unique id from rank 0: ", got.status().message()));
    }
    if (got->size() != sizeof(id.internal)) {
      return absl::InvalidArgumentError(absl::StrCat(Who(o), " nccl: the unique id in the store has ", got->size(),
                                                     " bytes, not ", sizeof(id.internal)));
    }
    std::memcpy(id.internal, got->data(), sizeof(id.internal));
  }
  if (cudaError_t e = cudaSetDevice(s->device); e != cudaSuccess) return CudaStatus(e, o, "set device");
  if (cudaError_t e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking); e != cudaSuccess) {
    return CudaStatus(e, o, "stream");
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  // Initialisation finishes asynchronously: polled against the deadline,
  // aborted past it (a peer that never initialises).
  absl::Status init = s->Settle(ncclCommInitRankConfig(&s->comm, o.world_size, id, o.rank, &config), "init");
  if (!init.ok()) return init;  // ~NcclState aborts and frees
  LOG(INFO) << Who(o) << " nccl group of " << o.world_size << " ready on cuda:" << s->device << " (NCCL "
            << nccl_version << ", timeout " << absl::FormatDuration(o.timeout) << ")";
  return std::unique_ptr<Communicator>(new NcclCommunicator(std::move(s)));
}

#endif

}  // namespace attune::worker::comm
