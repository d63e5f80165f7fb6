#pragma once

// Reading exported weights in tests (TESTONLY).

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/safetensors.h"

namespace attune::testing {

// Every F32 tensor of a safetensors file, by name.
inline std::map<std::string, std::vector<float>> Weights(const std::string& path) {
  auto f = common::ReadSafeTensors(path);
  EXPECT_TRUE(f.ok()) << f.status();
  std::map<std::string, std::vector<float>> out;
  if (!f.ok()) return out;
  for (const auto& [name, t] : f->tensors) {
    if (t.dtype != "F32") continue;
    const std::string_view bytes = t.bytes();
    std::vector<float> v(bytes.size() / 4);
    std::memcpy(v.data(), bytes.data(), bytes.size());
    out[name] = std::move(v);
  }
  return out;
}

inline double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

// The largest difference between two files' tensors; both must hold the same names.
inline double MaxAbsDiff(const std::string& a, const std::string& b) {
  auto wa = Weights(a), wb = Weights(b);
  EXPECT_EQ(wa.size(), wb.size());
  EXPECT_FALSE(wa.empty());
  double m = 0;
  for (const auto& [name, v] : wa) m = std::max(m, MaxAbsDiff(v, wb[name]));
  return m;
}

}  // namespace attune::testing
