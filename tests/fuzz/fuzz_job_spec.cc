// The spec reader as `attune submit` and the trainer run it: YAML or JSON
// text -> attune.v1.JobSpec -> JobConfig -> validation; and sweep files.
#include <string>

#include "common/rpc/job_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto spec = attune::common::ParseJobSpec(text, "fuzz.yaml");
  if (spec.ok()) (void)attune::common::ValidateJobConfig(attune::common::JobConfigFromProto(*spec));
  (void)attune::common::ParseSweepSpec(text, "fuzz.sweep.yaml");
  return 0;
}
