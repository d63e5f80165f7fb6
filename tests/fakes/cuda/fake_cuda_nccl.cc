// TESTONLY: see cuda_runtime_api.h and nccl.h beside this.

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_runtime_api.h"
#include "nccl.h"

namespace {

enum class Kind { kAllReduce, kBroadcast, kAllGather, kReduceScatter };

struct Call {
  const void* send = nullptr;
  void* recv = nullptr;
  size_t count = 0;
  ncclDataType_t type = ncclFloat32;
  Kind kind = Kind::kAllReduce;
  int root = 0;
};

struct Op {
  std::vector<Call> calls;
  int arrived = 0;
  bool done = false, hang = false;
};

struct Group {
  int nranks = 0, joined = 0;
  std::map<int64_t, Op> ops;
};

struct State {
  std::mutex mu;
  int devices = 1;
  bool hang = false;
  ncclResult_t async = ncclSuccess;
  int aborts = 0, live = 0;
  uint64_t next_id = 1;
  std::map<std::string, std::shared_ptr<Group>> groups;
};

State& S() {
  static State* s = new State;
  return *s;
}

size_t Size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclFloat32: return 4;
    default: return 8;
  }
}

float Bf16ToFloat(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t FloatToBf16(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

template <typename T>
void SumInto(std::vector<char>* out, const std::vector<Call>& calls) {
  const size_t n = calls[0].count;
  std::vector<T> acc(n, T{});
  for (const Call& c : calls) {
    const T* v = static_cast<const T*>(c.send);
    for (size_t i = 0; i < n; ++i) acc[i] += v[i];
  }
  std::memcpy(out->data(), acc.data(), n * sizeof(T));
}

// Every rank has issued the op: compute what each receives.
void Complete(Op& op) {
  const Call& c0 = op.calls[0];
  const size_t elem = Size(c0.type), n = c0.count;
  std::vector<char> result;
  size_t recv_bytes = n * elem;
  if (c0.kind == Kind::kAllReduce) {
    result.resize(recv_bytes);
    switch (c0.type) {
      case ncclFloat32: SumInto<float>(&result, op.calls); break;
      case ncclFloat64: SumInto<double>(&result, op.calls); break;
      case ncclInt64: SumInto<int64_t>(&result, op.calls); break;
      case ncclInt32: SumInto<int32_t>(&result, op.calls); break;
      case ncclInt8: SumInto<int8_t>(&result, op.calls); break;
      case ncclUint8: SumInto<uint8_t>(&result, op.calls); break;
      case ncclBfloat16: {
        std::vector<float> acc(n, 0.f);
        for (const Call& c : op.calls) {
          const uint16_t* v = static_cast<const uint16_t*>(c.send);
          for (size_t i = 0; i < n; ++i) acc[i] += Bf16ToFloat(v[i]);
        }
        uint16_t* o = reinterpret_cast<uint16_t*>(result.data());
        for (size_t i = 0; i < n; ++i) o[i] = FloatToBf16(acc[i]);
        break;
      }
      default: std::abort();  // fp16 is not needed by the tests
    }
  } else if (c0.kind == Kind::kReduceScatter) {
    // Rank r receives the float32 sum of every rank's r-th block, in rank order.
    if (c0.type != ncclFloat32) std::abort();  // the only type the tests reduce-scatter
    for (size_t r = 0; r < op.calls.size(); ++r) {
      std::vector<float> acc(n, 0.f);
      for (const Call& c : op.calls) {
        const float* v = static_cast<const float*>(c.send) + r * n;
        for (size_t i = 0; i < n; ++i) acc[i] += v[i];
      }
      std::memcpy(op.calls[r].recv, acc.data(), n * sizeof(float));
    }
    op.done = true;
    return;
  } else if (c0.kind == Kind::kBroadcast) {
    const Call& root = op.calls[static_cast<size_t>(c0.root)];
    result.assign(static_cast<const char*>(root.send), static_cast<const char*>(root.send) + recv_bytes);
  } else {
    recv_bytes = n * elem * op.calls.size();
    for (const Call& c : op.calls) {
      result.insert(result.end(), static_cast<const char*>(c.send), static_cast<const char*>(c.send) + n * elem);
    }
  }
  for (Call& c : op.calls) std::memcpy(c.recv, result.data(), recv_bytes);
  op.done = true;
}

}  // namespace

struct FakeCudaStream {
  std::vector<std::pair<std::shared_ptr<Group>, int64_t>> pending;
};
struct FakeCudaEvent {
  std::shared_ptr<Group> group;
  int64_t seq = -1;  // -1: nothing to wait for
};
struct FakeNcclComm {
  std::shared_ptr<Group> group;
  int rank = 0;
  int64_t next = 0;
};

cudaError_t cudaGetDeviceCount(int* count) {
  std::lock_guard<std::mutex> l(S().mu);
  *count = S().devices;
  return S().devices > 0 ? cudaSuccess : cudaErrorNoDevice;
}
cudaError_t cudaSetDevice(int device) {
  std::lock_guard<std::mutex> l(S().mu);
  return device >= 0 && device < S().devices ? cudaSuccess : cudaErrorInvalidValue;
}
const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaErrorNoDevice ? "no CUDA-capable device is detected" : e == cudaSuccess ? "no error" : "fake CUDA error";
}
const char* cudaGetErrorName(cudaError_t e) { return e == cudaSuccess ? "cudaSuccess" : "cudaErrorFake"; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = new FakeCudaStream;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t s) {
  std::lock_guard<std::mutex> l(S().mu);
  if (s == nullptr) return cudaSuccess;
  for (const auto& [g, seq] : s->pending) {
    if (!g->ops[seq].done) return cudaErrorNotReady;
  }
  s->pending.clear();
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  *e = new FakeCudaEvent;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  std::lock_guard<std::mutex> l(S().mu);
  if (s == nullptr || s->pending.empty()) {
    e->group.reset();
    e->seq = -1;
  } else {
    e->group = s->pending.back().first;
    e->seq = s->pending.back().second;
  }
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  std::lock_guard<std::mutex> l(S().mu);
  if (e->seq < 0 || e->group->ops[e->seq].done) return cudaSuccess;
  return cudaErrorNotReady;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) {
  std::lock_guard<std::mutex> l(S().mu);
  *p = std::malloc(bytes == 0 ? 1 : bytes);
  ++S().live;
  return cudaSuccess;
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
  std::lock_guard<std::mutex> l(S().mu);
  std::free(p);
  --S().live;
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}

ncclResult_t ncclGetVersion(int* version) {
  *version = 99999;
  return ncclSuccess;
}
ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::lock_guard<std::mutex> l(S().mu);
  std::memset(id->internal, 0, sizeof id->internal);
  const std::string name = "fake-" + std::to_string(S().next_id++);
  std::memcpy(id->internal, name.data(), name.size());
  return ncclSuccess;
}
ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank, ncclConfig_t* config) {
  std::lock_guard<std::mutex> l(S().mu);
  auto& g = S().groups[std::string(id.internal, sizeof id.internal)];
  if (!g) {
    g = std::make_shared<Group>();
    g->nranks = nranks;
  }
  if (g->nranks != nranks || rank < 0 || rank >= nranks) return ncclInvalidArgument;
  ++g->joined;
  *comm = new FakeNcclComm{g, rank, 0};
  // Non-blocking: in progress until every rank has joined (polled by the caller).
  return config != nullptr && config->blocking == 0 && g->joined < nranks ? ncclInProgress : ncclSuccess;
}
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async) {
  std::lock_guard<std::mutex> l(S().mu);
  *async = S().async != ncclSuccess ? S().async : comm->group->joined < comm->group->nranks ? ncclInProgress : ncclSuccess;
  return ncclSuccess;
}
ncclResult_t ncclCommAbort(ncclComm_t comm) {
  std::lock_guard<std::mutex> l(S().mu);
  ++S().aborts;
  delete comm;
  return ncclSuccess;
}
const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInvalidArgument: return "invalid argument";
    default: return "fake NCCL error";
  }
}
const char* ncclGetLastError(ncclComm_t) { return "fake: last error"; }

namespace {
ncclResult_t Issue(ncclComm_t comm, cudaStream_t stream, Call call) {
  std::lock_guard<std::mutex> l(S().mu);
  Group& g = *comm->group;
  const int64_t seq = comm->next++;
  Op& op = g.ops[seq];
  if (op.calls.empty()) op.calls.resize(static_cast<size_t>(g.nranks));
  op.calls[static_cast<size_t>(comm->rank)] = call;
  op.hang = op.hang || S().hang;
  if (++op.arrived == g.nranks && !op.hang) Complete(op);
  stream->pending.emplace_back(comm->group, seq);
  return ncclSuccess;
}
}  // namespace

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type, ncclRedOp_t,
                           ncclComm_t comm, cudaStream_t stream) {
  return Issue(comm, stream, {send, recv, count, type, Kind::kAllReduce, 0});
}
ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t type, int root,
                           ncclComm_t comm, cudaStream_t stream) {
  return Issue(comm, stream, {send, recv, count, type, Kind::kBroadcast, root});
}
ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t recvcount, ncclDataType_t type, ncclRedOp_t op,
                               ncclComm_t comm, cudaStream_t stream) {
  if (op != ncclSum) return ncclInvalidArgument;
  return Issue(comm, stream, {send, recv, recvcount, type, Kind::kReduceScatter, 0});
}
ncclResult_t ncclAllGather(const void* send, void* recv, size_t count, ncclDataType_t type, ncclComm_t comm,
                           cudaStream_t stream) {
  return Issue(comm, stream, {send, recv, count, type, Kind::kAllGather, 0});
}

namespace fake_nccl {
void Reset(int devices) {
  std::lock_guard<std::mutex> l(S().mu);
  S().devices = devices;
  S().hang = false;
  S().async = ncclSuccess;
  S().aborts = 0;
}
void SetHang(bool hang) {
  std::lock_guard<std::mutex> l(S().mu);
  S().hang = hang;
}
void SetAsyncError(ncclResult_t error) {
  std::lock_guard<std::mutex> l(S().mu);
  S().async = error;
}
int Aborts() {
  std::lock_guard<std::mutex> l(S().mu);
  return S().aborts;
}
int LiveBuffers() {
  std::lock_guard<std::mutex> l(S().mu);
  return S().live;
}
}  // namespace fake_nccl
