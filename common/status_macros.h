#pragma once

// ATTUNE_RETURN_IF_ERROR / ATTUNE_ASSIGN_OR_RETURN: Debian's abseil 20220623
// has no public ABSL_* versions of these macros.

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define ATTUNE_STATUS_CONCAT_INNER_(a, b) a##b
#define ATTUNE_STATUS_CONCAT_(a, b) ATTUNE_STATUS_CONCAT_INNER_(a, b)

#define ATTUNE_RETURN_IF_ERROR(expr)                   \
  do {                                                 \
    ::absl::Status attune_status_ = (expr);            \
    if (!attune_status_.ok()) return attune_status_;   \
  } while (0)

#define ATTUNE_ASSIGN_OR_RETURN(lhs, expr)                                     \
  ATTUNE_ASSIGN_OR_RETURN_IMPL_(ATTUNE_STATUS_CONCAT_(attune_sor_, __LINE__), \
                                lhs, expr)

#define ATTUNE_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()
