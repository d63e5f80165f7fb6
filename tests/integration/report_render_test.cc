// The HTML evaluation report as a browser draws it: headless Chromium lays
// out a real report, a script measures the page (tests/fixtures/
// report_layout_check.js), and a screenshot is kept beside the test output.

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "tests/testing/process.h"

namespace attune {
namespace {

namespace fs = std::filesystem;
using testing::Bin;
using testing::ReadText;
using testing::RunCommand;
using testing::WriteText;

const char kChromium[] = "chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run";

TEST(ReportRenderTest, ChromiumDrawsEveryElementWithoutOverlaps) {
  if (RunCommand("test -x /usr/bin/chromium").exit_code != 0) GTEST_FAIL() << "chromium is missing (scripts/install-deps.sh)";
  const fs::path dir = fs::temp_directory_path() / ("attune_report_render_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  // Two classes with long names, to stress the confusion matrix and tables.
  const std::string a = "cardiology-and-vascular-medicine", b = "oncology-solid-tumours";
  std::ofstream train(dir / "train.csv"), valid(dir / "valid.csv");
  train << "text,label\n";
  valid << "text,label\n";
  const char* words[] = {"heart", "artery", "tumour", "biopsy", "pressure", "lesion", "rhythm", "mass"};
  for (int i = 0; i < 160; ++i) {
    const bool cardio = i % 2 == 0;
    (i < 120 ? train : valid) << "patient " << i << " " << words[(cardio ? 0 : 2) + i % 2] << " "
                              << words[4 + (i * 7) % 4] << "," << (cardio ? a : b) << "\n";
  }
  train << "patient 0 heart pressure," << a << "\n";  // a duplicate, dropped by cleaning
  train.close();
  valid.close();
  WriteText((dir / "spec.yaml").string(),
            "name: rendered\nmodel:\n  config: {hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, "
            "intermediate_size: 32, max_position_embeddings: 64}\n  vocab_size: 120\n"
            "data: {train: " + (dir / "train.csv").string() + ", validation: " + (dir / "valid.csv").string() +
                ", max_length: 24}\nhyperparameters: {max_steps: 60, batch_size: 8, learning_rate: 5.0e-3}\n"
                "evaluation: {every_steps: 10, early_stopping: {metric: roc_auc, patience: 100}}\n"
                "output_dir: " + (dir / "out").string() + "\n");
  auto trained = RunCommand(Bin("attune-worker") + " train --spec " + (dir / "spec.yaml").string(), 300);
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  const std::string report = (dir / "out/eval_report.html").string();
  const auto json = nlohmann::json::parse(ReadText((dir / "out/eval_report.json").string()));

  // The page with the measuring script appended, as the browser runs it.
  const std::string script = ReadText(std::string(ATTUNE_SOURCE_DIR) + "/tests/fixtures/report_layout_check.js");
  ASSERT_FALSE(script.empty());
  std::string page = ReadText(report);
  page.replace(page.rfind("</body>"), 7, "<script>" + script + "</script></body>");
  WriteText((dir / "check.html").string(), page);
  auto dom = RunCommand(std::string(kChromium) + " --window-size=1100,2600 --dump-dom file://" +
                            (dir / "check.html").string() + " 2>/dev/null",
                        120);
  ASSERT_EQ(dom.exit_code, 0) << dom.output;
  const size_t at = dom.output.find("<pre id=\"layout-check\">");
  ASSERT_NE(at, std::string::npos) << dom.output.substr(0, 2000);
  const size_t from = at + std::string("<pre id=\"layout-check\">").size();
  const std::string text = absl::StrReplaceAll(dom.output.substr(from, dom.output.find("</pre>", from) - from),
                                               {{"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&amp;", "&"}});
  const auto found = nlohmann::json::parse(text, nullptr, false);
  ASSERT_TRUE(found.is_object()) << text;

  EXPECT_TRUE(found["problems"].empty()) << found["problems"].dump(2);
  EXPECT_EQ(found["charts"], nlohmann::json({"Loss", "Evaluation metrics", "ROC curve"}));
  for (const char* title : {"optimizer step", "loss", "value", "false positive rate", "true positive rate"}) {
    EXPECT_NE(std::find(found["axis_titles"].begin(), found["axis_titles"].end(), title), found["axis_titles"].end())
        << title << " in " << found["axis_titles"].dump();
  }
  // The best step and the AUC as the JSON report (another path) has them.
  const std::string best = "best step " + std::to_string(json["best_step"].get<int64_t>());
  EXPECT_EQ(found["markers"], nlohmann::json({best, best}));
  EXPECT_EQ(found["notes"], nlohmann::json({absl::StrFormat("AUC = %.4f", json["final"]["roc_auc"].get<double>())}));
  for (const char* legend : {"train loss", "train loss (smoothed)", "eval loss"}) {
    EXPECT_NE(std::find(found["legends"].begin(), found["legends"].end(), legend), found["legends"].end()) << legend;
  }
  EXPECT_EQ(found["confusion_labels"], nlohmann::json({a.substr(0, 15) + "\u2026", b.substr(0, 15) + "\u2026"}));
  EXPECT_EQ(found["per_class_rows"], 2);
  EXPECT_EQ(found["data_rows"], 2);
  EXPECT_GT(found["spec"].get<int>(), 100);
  EXPECT_LE(found["width"].get<int>(), 1100) << "the page is wider than the window";
  const std::string sha = RunCommand("sha256sum " + (dir / "train.csv").string()).output.substr(0, 64);
  EXPECT_NE(page.find(sha), std::string::npos) << "the train file's SHA-256 " << sha;
  EXPECT_NE(page.find("duplicate"), std::string::npos) << "the data report's drop counts";
  EXPECT_NE(std::find(found["run_rows"].begin(), found["run_rows"].end(), "ranks (world size)"), found["run_rows"].end());

  // The screenshot, kept for people (ctest lists it as an attached file).
  const std::string png = std::string(ATTUNE_BINARY_DIR) + "/test-artifacts/eval_report.png";
  fs::create_directories(fs::path(png).parent_path());
  fs::remove(png);
  auto shot = RunCommand(std::string(kChromium) + " --window-size=1100,2600 --screenshot=" + png + " file://" + report +
                             " 2>/dev/null",
                         120);
  ASSERT_EQ(shot.exit_code, 0) << shot.output;
  ASSERT_TRUE(fs::exists(png));
  EXPECT_GT(fs::file_size(png), 20000u);
  EXPECT_EQ(ReadText(png).substr(1, 3), "PNG");
  std::cout << "screenshot: " << png << "\n";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace attune
