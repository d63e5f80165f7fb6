#include "coordinator/job_row.h"

#include <stdexcept>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/job_config.h"
#include "common/json_fields.h"

namespace attune::coordinator {
namespace {

using nlohmann::json;

using common::JsonInt;

json ProgressJson(const ProgressInfo& p) {
  return {{"step", p.step}, {"total", p.total_steps}, {"epoch", p.epoch}, {"loss", p.loss},
          {"lr", p.learning_rate}, {"sps", p.samples_per_second}};
}
ProgressInfo ProgressFrom(const json& j) {
  ProgressInfo p;
  p.step = JsonInt(j, "step", 0);
  p.total_steps = JsonInt(j, "total", 0);
  p.epoch = j.value("epoch", 0.0);
  p.loss = j.value("loss", 0.0);
  p.learning_rate = j.value("lr", 0.0);
  p.samples_per_second = j.value("sps", 0.0);
  return p;
}
json EvalJson(const EvalInfo& e) { return {{"step", e.step}, {"metrics", e.metrics}}; }
EvalInfo EvalFrom(const json& j) {
  EvalInfo e;
  e.step = JsonInt(j, "step", -1);
  if (j.contains("metrics") && j["metrics"].is_object()) {
    for (const auto& [name, v] : j["metrics"].items()) {
      if (v.is_number()) e.metrics[name] = v.get<double>();
    }
  } else {
    // A row written before metrics became a map: its six fixed fields.
    for (const char* name : {"loss", "accuracy", "f1", "roc_auc", "precision", "recall"}) {
      if (j.contains(name) && j[name].is_number()) e.metrics[name] = j[name].get<double>();
    }
  }
  return e;
}

}  // namespace

std::string JobBody(const Job& j) {
  const auto& c = j.config;
  json b = {{"spec_json", j.spec_json},
            {"message", j.message},
            {"generation", j.generation},
            {"restarts", j.restarts},
            {"created_ms", j.created_ms},
            {"updated_ms", j.updated_ms},
            {"not_before_ms", j.not_before_ms},
            {"progress", ProgressJson(j.progress)},
            {"last_eval", EvalJson(j.last_eval)},
            {"baseline", EvalJson(j.baseline)},
            {"baseline_method", j.baseline_method},
            {"last_checkpoint_step", j.last_checkpoint_step},
            {"workers", j.workers},
            {"depends_on", j.depends_on},
            {"owner", j.owner},
            {"config",
             {{"name", c.name},
              {"labels", c.labels},
              {"world_size", c.world_size},
              {"cpus_per_rank", c.cpus_per_rank},
              {"gpus_per_rank", c.gpus_per_rank},
              {"priority", c.priority},
              {"max_restarts", c.max_restarts},
              {"backend", c.backend},
              {"output_dir", c.output_dir}}}};
  return b.dump();
}

// A row as stored; every field is checked, because the file is outside the
// coordinator's control (an operator's edit, a disk fault, another version).
absl::StatusOr<Job> JobFrom(const std::string& id, int64_t seq, const std::string& idem, int64_t state,
                            const std::string& body) try {
  Job j;
  j.id = id;
  j.seq = seq;
  j.idempotency_key = idem;
  if (state < static_cast<int>(JobState::kValidating) || state > static_cast<int>(JobState::kUnschedulable)) {
    return absl::DataLossError(absl::StrCat("state ", state, " is not a job state"));
  }
  j.state = static_cast<JobState>(state);
  const json b = json::parse(body);
  j.spec_json = b.value("spec_json", "");
  j.message = b.value("message", "");
  j.generation = JsonInt(b, "generation", 0);
  j.restarts = JsonInt(b, "restarts", 0);
  j.created_ms = JsonInt(b, "created_ms", 0);
  j.updated_ms = JsonInt(b, "updated_ms", 0);
  j.not_before_ms = JsonInt(b, "not_before_ms", 0);
  j.progress = ProgressFrom(b.value("progress", json::object()));
  j.last_eval = EvalFrom(b.value("last_eval", json::object()));
  j.baseline = EvalFrom(b.value("baseline", json::object()));
  j.baseline_method = b.value("baseline_method", "");
  j.last_checkpoint_step = JsonInt(b, "last_checkpoint_step", -1);
  j.workers = b.value("workers", std::vector<std::string>{});
  j.depends_on = b.value("depends_on", "");
  j.owner = b.value("owner", "");
  const json& c = b.at("config");
  j.config.name = c.value("name", "");
  j.config.labels = c.value("labels", std::map<std::string, std::string>{});
  j.config.world_size = JsonInt(c, "world_size", 1);
  j.config.cpus_per_rank = JsonInt(c, "cpus_per_rank", 1);
  j.config.gpus_per_rank = JsonInt(c, "gpus_per_rank", 0);
  j.config.priority = JsonInt(c, "priority", 0);
  j.config.max_restarts = JsonInt(c, "max_restarts", 0);
  j.config.backend = c.value("backend", "gloo");
  j.config.output_dir = c.value("output_dir", "");
  if (!common::IsValidName(j.config.name)) return absl::DataLossError("config.name is not a job name");
  if (j.config.world_size < 1 || j.config.world_size > 1024) {
    return absl::DataLossError(absl::StrCat("config.world_size ", j.config.world_size, " is outside [1, 1024]"));
  }
  if (j.config.cpus_per_rank < 1 || j.config.cpus_per_rank > 1024 || j.config.gpus_per_rank < 0 ||
      j.config.gpus_per_rank > 64) {
    return absl::DataLossError("config.cpus_per_rank or gpus_per_rank is out of range");
  }
  if (j.generation < 0 || j.restarts < 0 || j.config.max_restarts < 0) {
    return absl::DataLossError("a negative generation, restart count or max_restarts");
  }
  return j;
} catch (const std::exception& e) {
  return absl::DataLossError(absl::StrCat("body is not a stored job: ", e.what()));
}

std::string EventBody(const Event& e) {
  return json{{"unix_ms", e.unix_ms}, {"type", static_cast<int>(e.type)}, {"state", static_cast<int>(e.state)},
              {"message", e.message}, {"progress", ProgressJson(e.progress)}, {"eval", EvalJson(e.eval)},
              {"generation", e.generation}}
      .dump();
}

absl::StatusOr<Event> EventFrom(int64_t index, const std::string& body) try {
  const json b = json::parse(body);
  Event e;
  e.index = index;
  e.unix_ms = JsonInt(b, "unix_ms", 0);
  e.type = static_cast<EventType>(JsonInt(b, "type", 1));
  e.state = static_cast<JobState>(JsonInt(b, "state", 1));
  e.message = b.value("message", "");
  e.progress = ProgressFrom(b.value("progress", json::object()));
  e.eval = EvalFrom(b.value("eval", json::object()));
  e.generation = JsonInt(b, "generation", 0);
  return e;
} catch (const std::exception& e) {
  return absl::DataLossError(e.what());
}


}  // namespace attune::coordinator
