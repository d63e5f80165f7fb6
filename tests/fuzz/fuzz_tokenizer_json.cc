// A tokenizer.json of arbitrary bytes: loading refuses or accepts it without
// a crash; an accepted one encodes and decodes a fixed text and the input's
// own bytes.
#include <string>

#include "worker/text/bpe_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string json(reinterpret_cast<const char*>(data), size);
  auto t = attune::worker::text::BpeTokenizer::FromJson(json, "", "fuzz");
  if (!t.ok()) return 0;
  for (const std::string& text : {std::string("Hello wörld <|im_start|> 123 \xF0\x9F\x91\x8D  \n"), json.substr(0, 256)}) {
    const auto ids = (*t)->EncodeText(text, true);
    (void)(*t)->Decode(ids, false);
    (void)(*t)->Encode(text, &text, 16, true);
  }
  return 0;
}
