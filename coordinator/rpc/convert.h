#pragma once

// Conversion between attune.v1 messages and coordinator domain types.

#include "attune/v1/coordinator.pb.h"
#include "coordinator/job_manager.h"
#include "coordinator/types.h"

namespace attune::coordinator::rpc {

v1::Job ToProto(const Job& j);
v1::JobEvent ToProto(const Event& e);
Event FromProto(const v1::JobEvent& e);

}  // namespace attune::coordinator::rpc
