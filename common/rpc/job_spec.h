#pragma once

// Reading job specs (YAML or JSON text) into attune.v1.JobSpec, and
// converting JobSpec to the domain JobConfig. The only place that maps the
// proto onto the domain struct.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attune/v1/job.pb.h"
#include "attune/v1/sweep.pb.h"
#include "common/job_config.h"

namespace attune::common {

// Parses YAML (a superset of JSON) into a JobSpec. Unknown keys, wrong types
// and malformed text are kInvalidArgument naming the field path.
// `overrides` are "PATH=VALUE" texts (`--set`): each VALUE is read as a YAML
// scalar and set at PATH before the checks, so a bad path is refused naming it.
absl::StatusOr<v1::JobSpec> ParseJobSpec(const std::string& text, const std::string& source,
                                         const std::vector<std::string>& overrides = {});

// The same for a sweep file (attune.v1.SweepSpec); the parameters' values are
// checked field by field too.
absl::StatusOr<v1::SweepSpec> ParseSweepSpec(const std::string& text, const std::string& source);

// Applies defaults; does not validate.
JobConfig JobConfigFromProto(const v1::JobSpec& spec);

// Reads, parses, converts and validates a spec file.
absl::StatusOr<JobConfig> LoadJobConfig(const std::string& path, const std::vector<std::string>& overrides = {});

}  // namespace attune::common
