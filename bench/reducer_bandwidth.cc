// The Reducer's own cost: with every rank's gradients ready and the ranks
// lined up by a barrier, the time to copy gradients into buckets, allreduce
// them and copy the averages back, against one allreduce of a flat buffer of
// the same bytes on the same communicator. Run one process per rank (the
// bench/ddp_throughput.py driver does); rank 0 prints one JSON line.
//
// usage: attune-reducer-bench --rank R --world_size N --port P [--hidden 256 --layers 4] [--iters 30]

#include <algorithm>
#include <chrono>
#include <iostream>
#include <vector>

#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "worker/comm/communicator.h"
#include "worker/comm/reducer.h"

ABSL_FLAG(int, rank, 0, "this rank");
ABSL_FLAG(int, world_size, 2, "ranks");
ABSL_FLAG(int, port, 29500, "rank 0's store port on 127.0.0.1");
ABSL_FLAG(int, hidden, 256, "BERT hidden size");
ABSL_FLAG(int, layers, 4, "BERT layers");
ABSL_FLAG(int, vocab, 8192, "vocabulary size");
ABSL_FLAG(int, iters, 30, "timed iterations (after 3 warm-up ones)");
ABSL_FLAG(int64_t, bucket_cap_mb, 25, "bucket size cap, MB");

namespace {

// The trainable tensors of a BERT classifier, in registration order.
std::vector<std::vector<int64_t>> BertShapes(int64_t h, int64_t layers, int64_t vocab) {
  std::vector<std::vector<int64_t>> s = {{vocab, h}, {512, h}, {2, h}, {h}, {h}};
  for (int64_t l = 0; l < layers; ++l) {
    for (int k = 0; k < 4; ++k) {
      s.push_back({h, h});
      s.push_back({h});
    }
    s.insert(s.end(), {{h}, {h}, {4 * h, h}, {4 * h}, {h, 4 * h}, {h}, {h}, {h}});
  }
  s.insert(s.end(), {{h, h}, {h}, {2, h}, {2}});
  return s;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  torch::set_num_threads(1);
  namespace comm = attune::worker::comm;
  comm::CommunicatorOptions co;
  co.rank = absl::GetFlag(FLAGS_rank);
  co.world_size = absl::GetFlag(FLAGS_world_size);
  co.master_port = absl::GetFlag(FLAGS_port);
  auto c = comm::CreateGlooCommunicator(co);
  if (!c.ok()) {
    std::cerr << c.status() << "\n";
    return 1;
  }
  std::vector<at::Tensor> params;
  int64_t numel = 0;
  for (const auto& shape : BertShapes(absl::GetFlag(FLAGS_hidden), absl::GetFlag(FLAGS_layers),
                                      absl::GetFlag(FLAGS_vocab))) {
    at::Tensor p = torch::randn(shape).requires_grad_(true);
    p.mutable_grad() = torch::randn(shape);
    numel += p.numel();
    params.push_back(p);
  }
  comm::ReducerOptions ro;
  ro.overlap = false;
  ro.bucket_cap_bytes = absl::GetFlag(FLAGS_bucket_cap_mb) * 1000 * 1000;
  comm::Reducer reducer(params, **c, ro);
  at::Tensor flat = torch::zeros({numel});
  // The sharded modes' pair (NOTE [ring reduce-scatter]): a reduce-scatter
  // into the rank's block, then an all-gather in place, of the same bytes
  // (padded to a multiple of the world size).
  const int64_t part = (numel + co.world_size - 1) / co.world_size;
  at::Tensor sharded = torch::zeros({part * co.world_size});
  at::Tensor mine = sharded.narrow(0, co.rank * part, part);
  const int iters = absl::GetFlag(FLAGS_iters);
  std::vector<double> reducer_s, raw_s, rs_s, ag_s;
  using Clock = std::chrono::steady_clock;
  for (int i = 0; i < iters + 3; ++i) {
    // Alternate the two, each after a barrier, so both see the same conditions.
    if (auto s = (*c)->Barrier(); !s.ok()) return std::cerr << s << "\n", 1;
    auto t0 = Clock::now();
    reducer.PrepareForBackward(true);
    if (auto s = reducer.FinishBackward(); !s.ok()) return std::cerr << s << "\n", 1;
    const double r = std::chrono::duration<double>(Clock::now() - t0).count();
    if (auto s = (*c)->Barrier(); !s.ok()) return std::cerr << s << "\n", 1;
    t0 = Clock::now();
    if (auto s = comm::AllReduceSumBlocking(**c, flat); !s.ok()) return std::cerr << s << "\n", 1;
    const double w = std::chrono::duration<double>(Clock::now() - t0).count();
    if (auto s = (*c)->Barrier(); !s.ok()) return std::cerr << s << "\n", 1;
    t0 = Clock::now();
    if (auto s = comm::ReduceScatterSumBlocking(**c, sharded, mine); !s.ok()) return std::cerr << s << "\n", 1;
    const double rs = std::chrono::duration<double>(Clock::now() - t0).count();
    t0 = Clock::now();
    if (auto s = (*c)->AllGatherInPlace(sharded); !s.ok()) return std::cerr << s << "\n", 1;
    const double ag = std::chrono::duration<double>(Clock::now() - t0).count();
    if (i >= 3) {
      reducer_s.push_back(r);
      raw_s.push_back(w);
      rs_s.push_back(rs);
      ag_s.push_back(ag);
    }
  }
  if (co.rank == 0) {
    const double bytes = static_cast<double>(numel) * 4, n = co.world_size;
    const double bus = 2 * (n - 1) / n;  // bytes each rank moves per byte reduced (ring), as nccl-tests report
    const double half = (n - 1) / n;     // a reduce-scatter's, or an all-gather's
    std::cout << absl::StrFormat(
        "{\"bytes\": %.0f, \"buckets\": %d, \"reducer_seconds\": %.6f, \"raw_seconds\": %.6f, "
        "\"reducer_bus_gbps\": %.4f, \"raw_bus_gbps\": %.4f, \"reduce_scatter_seconds\": %.6f, "
        "\"all_gather_seconds\": %.6f, \"reduce_scatter_bus_gbps\": %.4f, \"all_gather_bus_gbps\": %.4f}\n",
        bytes, reducer.bucket_count(), Median(reducer_s), Median(raw_s), bytes * bus / Median(reducer_s) / 1e9,
        bytes * bus / Median(raw_s) / 1e9, Median(rs_s), Median(ag_s), bytes * half / Median(rs_s) / 1e9,
        bytes * half / Median(ag_s) / 1e9);
  }
  return 0;
}
