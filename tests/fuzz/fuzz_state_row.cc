// The coordinator's state-file rows: a job body (with a state number from
// the first byte), an event body and a sweep body, each decoded and, when
// accepted, encoded again.
#include <string>

#include "coordinator/job_row.h"
#include "coordinator/sweep/types.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  auto job = attune::coordinator::JobFrom("j-1", 1, "", static_cast<int64_t>(data[0]) - 8, body);
  if (job.ok()) (void)attune::coordinator::JobBody(*job);
  auto event = attune::coordinator::EventFrom(0, body);
  if (event.ok()) (void)attune::coordinator::EventBody(*event);
  auto sweep = attune::coordinator::sweep::SweepFromJson(body);
  if (sweep.ok()) (void)attune::coordinator::sweep::SweepToJson(*sweep);
  return 0;
}
