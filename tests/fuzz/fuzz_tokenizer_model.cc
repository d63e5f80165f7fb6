// A tokenizer.model of arbitrary bytes (NOTE [tokenizer.model]): the
// conversion refuses or accepts it without a crash or a read past its end;
// an accepted one loads as a tokenizer that encodes and decodes a fixed text
// and the input's own bytes.
#include <string>

#include "worker/text/bpe_tokenizer.h"
#include "worker/text/sentencepiece_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string model(reinterpret_cast<const char*>(data), size);
  auto converted = attune::worker::text::ConvertSentencePiece(model, "", "fuzz");
  if (!converted.ok()) return 0;
  auto t = attune::worker::text::BpeTokenizer::FromJson(converted->tokenizer_json, converted->tokenizer_config_json,
                                                        "fuzz");
  if (!t.ok()) return 0;
  for (const std::string& text : {std::string("Hello wörld <s> 123 \xF0\x9F\x91\x8D  \n"), model.substr(0, 256)}) {
    const auto ids = (*t)->EncodeText(text, true);
    (void)(*t)->Decode(ids, false);
  }
  return 0;
}
