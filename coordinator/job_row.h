#pragma once

// The state file's row bodies (JSON text) for jobs and events, both ways.
// Rows come from a file outside the coordinator's control (an operator's
// edit, a disk fault, another version), so decoding checks every field and
// never throws; it is fuzzed (tests/fuzz). SQLite-free.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/types.h"

namespace attune::coordinator {

std::string JobBody(const Job& job);
// kDataLoss naming what is wrong.
absl::StatusOr<Job> JobFrom(const std::string& id, int64_t seq, const std::string& idem, int64_t state,
                            const std::string& body);

std::string EventBody(const Event& event);
absl::StatusOr<Event> EventFrom(int64_t index, const std::string& body);

}  // namespace attune::coordinator
