#pragma once

// A sweep's report: sweep_report.json (every trial with its parameters,
// objective curve and outcome, and the best trial) and sweep_report.html (the
// same as a table, with each trial's objective over steps as an SVG chart).

#include <string>

#include "coordinator/sweep/types.h"

namespace attune::coordinator::sweep {

std::string SweepReportJson(const SweepRecord& s);
std::string SweepReportHtml(const SweepRecord& s);

}  // namespace attune::coordinator::sweep
