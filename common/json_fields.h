#pragma once

// Typed reads of JSON that comes from outside the process (state-file rows,
// stored sweeps), which never invoke undefined behaviour. nlohmann's
// get<int64_t>() and value<int64_t>() cast a double such as 1e300 to an
// integer, which is undefined (found by fuzz_state_row); these accept only
// integral numbers within range and otherwise throw std::out_of_range, which
// the decoders turn into kDataLoss naming the field. Header-only.

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace attune::common {

// A double that is an integer within int64's range (1e3 counts; 1.5, 1e300,
// NaN do not), converted without an out-of-range cast.
inline bool DoubleToInt(double d, int64_t* out) {
  if (!std::isfinite(d) || d != std::trunc(d) || d < -9.2e18 || d > 9.2e18) return false;
  *out = static_cast<int64_t>(d);
  return true;
}

// An integral JSON number that fits in int64 (1e3 counts; 1.5, 1e300 and "3" do not).
inline bool JsonToInt(const nlohmann::json& v, int64_t* out) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) return false;
    *out = v.get<int64_t>();
    return true;
  }
  return v.is_number_float() && DoubleToInt(v.get<double>(), out);
}

// `o[key]` as an integer; `def` when absent or null.
inline int64_t JsonInt(const nlohmann::json& o, const char* key, int64_t def) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return def;
  int64_t v = 0;
  if (!JsonToInt(*it, &v)) throw std::out_of_range(std::string(key) + " is not an integer");
  return v;
}

// `o[key]` as an integer that must be there.
inline int64_t JsonIntAt(const nlohmann::json& o, const char* key) {
  if (!o.contains(key)) throw std::out_of_range(std::string(key) + " is missing");
  return JsonInt(o, key, 0);
}

// `o[key]` as an enumerator numbered within [lo, hi].
template <typename E>
E JsonEnumAt(const nlohmann::json& o, const char* key, int lo, int hi) {
  const int64_t v = JsonIntAt(o, key);
  if (v < lo || v > hi) throw std::out_of_range(std::string(key) + " " + std::to_string(v) + " is out of range");
  return static_cast<E>(v);
}

}  // namespace attune::common
