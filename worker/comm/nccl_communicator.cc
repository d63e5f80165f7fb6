#include "absl/strings/str_cat.h"
#include "worker/comm/communicator.h"

#ifdef ATTUNE_WITH_NCCL
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace attune::worker::comm {

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(const CommunicatorOptions& o) {
#ifndef ATTUNE_WITH_NCCL
  return absl::FailedPreconditionError(
      absl::StrCat("job=", o.job, " rank=", o.rank, ": workers.backend nccl: this build has no NCCL (nccl.h not found)"));
#else
  int nccl_version = 0;
  ncclGetVersion(&nccl_version);
  int devices = 0;
  cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job=", o.job, " rank=", o.rank, ": workers.backend nccl needs a CUDA GPU, and none is usable here (",
        err != cudaSuccess ? cudaGetErrorString(err) : "0 devices", "; NCCL ", nccl_version,
        "). Use workers.backend: gloo on CPUs."));
  }
  // NOTE [NCCL and libtorch]: the Debian libtorch this build links is
  // CPU-only, so there are no CUDA tensors for NCCL to reduce. The NCCL
  // communicator needs a CUDA libtorch build; until then it refuses clearly.
  return absl::FailedPreconditionError(absl::StrCat(
      "job=", o.job, " rank=", o.rank, ": found ", devices, " CUDA device(s) and NCCL ", nccl_version,
      ", but this build links a CPU-only libtorch; the NCCL backend needs a CUDA libtorch build"));
#endif
}

}  // namespace attune::worker::comm
