#include "worker/train/trainer.h"

#include <dlfcn.h>
#include <malloc.h>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/train/engine.h"

namespace attune::worker::train {

std::string ConfigureAllocatorForTraining() {
  constexpr int kMmapThreshold = 32 << 20;  // glibc's upper limit on 64-bit
  constexpr int kTrimThreshold = 512 << 20;
  bool ok = mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1 && mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1;
  return ok ? "allocator: mmap threshold 32 MiB, trim threshold 512 MiB" : "allocator: mallopt refused, defaults kept";
}

std::string ConfigureThreads(int threads) {
  at::set_num_threads(threads);
  try {
    at::set_num_interop_threads(1);
  } catch (const c10::Error&) {
    // Already set in this process; the intra-op setting above is what matters.
  }
  // OpenBLAS keeps its own pool, which at::set_num_threads does not reach.
  using SetFn = void (*)(int);
  using GetFn = int (*)();
  auto set_blas = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  auto get_blas = reinterpret_cast<GetFn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  std::string blas = "blas=unknown (not OpenBLAS)";
  if (set_blas) {
    set_blas(threads);
    blas = absl::StrCat("blas=", get_blas ? get_blas() : threads, " (OpenBLAS)");
  }
  return absl::StrCat("threads: torch=", at::get_num_threads(), " ", blas);
}

absl::StatusOr<TrainResult> RunTraining(const common::JobConfig& config, const TrainerOptions& options,
                                        TrainerObserver* observer) {
  if (config.model_path.empty() && !config.model_from_job.empty()) {
    return absl::InvalidArgumentError(
        "model.from_job: only the coordinator resolves another job's model; run by hand, give model.path "
        "(that job's output_dir/model)");
  }
  // NOTE [engine phases]
  Engine engine(config, options, observer);
  ATTUNE_RETURN_IF_ERROR(engine.Setup());
  while (!engine.Done()) ATTUNE_RETURN_IF_ERROR(engine.Step());
  return engine.Finish();
}

}  // namespace attune::worker::train
