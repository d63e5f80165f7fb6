#include "common/torch_pickle.h"

#include <cstring>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace attune::common {
namespace {

absl::Status Bad(const std::string& source, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", why));
}

// A value of the restricted pickle machine.
struct Value;
using Ref = std::shared_ptr<Value>;
struct Value {
  enum Kind { kNone, kBool, kInt, kBigInt, kFloat, kString, kBytes, kTuple, kList, kDict, kGlobal, kStorage, kTensor };
  Kind kind = kNone;
  int64_t i = 0;  // kInt, kBool
  double f = 0;
  std::string s;  // kString, kBytes, kBigInt (little-endian bytes), kGlobal ("module.name"), kStorage (key)
  std::vector<Ref> items;                    // kTuple, kList
  std::vector<std::pair<Ref, Ref>> entries;  // kDict, in insertion order
  PickledStorage storage;                    // kStorage
  PickledTensor tensor;                      // kTensor
};

Ref Make(Value::Kind k) {
  auto v = std::make_shared<Value>();
  v->kind = k;
  return v;
}

const char* KindName(Value::Kind k) {
  static const char* names[] = {"None", "bool",  "int",  "int",    "float",  "str",    "bytes",
                                "tuple", "list", "dict", "global", "storage", "tensor"};
  return names[k];
}

// Storage classes by global name, and their dtype.
std::optional<std::string> StorageDtype(const std::string& global) {
  static const std::map<std::string, std::string> kStorages = {
      {"torch.FloatStorage", "F32"}, {"torch.HalfStorage", "F16"},  {"torch.BFloat16Storage", "BF16"},
      {"torch.DoubleStorage", "F64"}, {"torch.LongStorage", "I64"}, {"torch.IntStorage", "I32"},
      {"torch.ShortStorage", "I16"}, {"torch.CharStorage", "I8"},   {"torch.ByteStorage", "U8"},
      {"torch.BoolStorage", "BOOL"}};
  auto it = kStorages.find(global);
  if (it == kStorages.end()) return std::nullopt;
  return it->second;
}

bool Allowed(const std::string& global) {
  return global == "collections.OrderedDict" || global == "torch._utils._rebuild_tensor_v2" ||
         StorageDtype(global).has_value();
}

constexpr size_t kMaxDepth = 1 << 16;  // stack entries and marks

class Machine {
 public:
  Machine(std::string_view bytes, std::string source) : b_(bytes), source_(std::move(source)) {}
  // A pickle may build a value that holds itself (a list appended to itself
  // through the memo): shared_ptr cycles. Every value is made here and its
  // links cut when the machine ends, so a cycle cannot leak (fuzz_torch_pickle
  // found it). The values a Run returns are valid while the machine lives.
  ~Machine() {
    for (auto& v : all_) {
      v->items.clear();
      v->entries.clear();
    }
  }
  Machine(const Machine&) = delete;
  Machine& operator=(const Machine&) = delete;

  // Runs from `at` to STOP; the pickle's value, and `at` past it.
  absl::StatusOr<Ref> Run(size_t* at) {
    pos_ = *at;
    stack_.clear();
    marks_.clear();
    memo_.clear();
    while (true) {
      if (pos_ >= b_.size()) return Err("ends before STOP");
      const auto op = static_cast<unsigned char>(b_[pos_++]);
      absl::Status s = Step(op);
      if (!s.ok()) return s;
      if (op == '.') break;
    }
    if (stack_.size() != 1) return Err("STOP with a stack of " + std::to_string(stack_.size()));
    *at = pos_;
    return stack_.back();
  }

 private:
  Ref New(Value::Kind k) {
    all_.push_back(Make(k));
    return all_.back();
  }
  absl::Status Err(const std::string& why) const { return Bad(source_, absl::StrCat(why, " (pickle offset ", pos_, ")")); }

  absl::StatusOr<std::string_view> Take(size_t n) {
    if (n > b_.size() - pos_) return Err("truncated");
    std::string_view out = b_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  absl::StatusOr<uint64_t> Le(size_t n) {
    auto raw = Take(n);
    if (!raw.ok()) return raw.status();
    uint64_t v = 0;
    for (size_t k = n; k-- > 0;) v = (v << 8) | static_cast<unsigned char>((*raw)[k]);
    return v;
  }
  absl::StatusOr<std::string> Line() {
    const size_t nl = b_.find('\n', pos_);
    if (nl == std::string_view::npos || nl - pos_ > 256) return Err("unterminated text line");
    std::string out(b_.substr(pos_, nl - pos_));
    pos_ = nl + 1;
    return out;
  }
  absl::Status Push(Ref v) {
    if (stack_.size() >= kMaxDepth) return Err("stack too deep");
    stack_.push_back(std::move(v));
    return absl::OkStatus();
  }
  absl::StatusOr<Ref> Pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) return Err("stack underflow");
    Ref v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  // The items above the last mark, which is dropped.
  absl::StatusOr<std::vector<Ref>> PopMark() {
    if (marks_.empty()) return Err("no MARK");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Ref> out(stack_.begin() + static_cast<long>(m), stack_.end());
    stack_.resize(m);
    return out;
  }
  absl::StatusOr<Ref> Top() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) return Err("stack underflow");
    return stack_.back();
  }
  absl::Status Memo(uint64_t key) {
    if (stack_.empty()) return Err("memo of an empty stack");
    if (memo_.size() >= kMaxDepth * 16 && !memo_.count(key)) return Err("memo too large");
    memo_[key] = stack_.back();
    return absl::OkStatus();
  }
  absl::Status Get(uint64_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) return Err(absl::StrCat("memo key ", key, " never stored"));
    return Push(it->second);
  }
  absl::Status String(Value::Kind kind, size_t n) {
    auto raw = Take(n);
    if (!raw.ok()) return raw.status();
    Ref v = New(kind);
    v->s = std::string(*raw);
    return Push(v);
  }
  absl::Status Int(int64_t i) {
    Ref v = New(Value::kInt);
    v->i = i;
    return Push(v);
  }
  absl::Status Global(std::string module, std::string name) {
    const std::string g = module + "." + name;
    if (!Allowed(g)) return Err(absl::StrCat("refuses global ", g, ": only a state_dict's tensors are read"));
    Ref v = New(Value::kGlobal);
    v->s = g;
    return Push(v);
  }
  absl::Status SetItems(const Ref& dict, const std::vector<Ref>& kv) {
    if (dict->kind != Value::kDict) return Err(absl::StrCat("SETITEM on a ", KindName(dict->kind)));
    if (kv.size() % 2) return Err("SETITEMS with an odd number of items");
    for (size_t k = 0; k < kv.size(); k += 2) {
      bool replaced = false;
      for (auto& e : dict->entries) {
        if (e.first->kind == kv[k]->kind && e.first->kind == Value::kString && e.first->s == kv[k]->s) {
          e.second = kv[k + 1];
          replaced = true;
        }
      }
      if (!replaced) dict->entries.emplace_back(kv[k], kv[k + 1]);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<int64_t>> Ints(const Ref& v, const char* what) {
    if (v->kind != Value::kTuple) return Err(absl::StrCat(what, " is not a tuple"));
    std::vector<int64_t> out;
    for (const auto& e : v->items) {
      if (e->kind != Value::kInt || e->i < 0) return Err(absl::StrCat(what, " holds a non-integer or a negative"));
      out.push_back(e->i);
    }
    return out;
  }

  absl::StatusOr<Ref> Reduce(const Ref& fn, const Ref& args) {
    if (fn->kind != Value::kGlobal || args->kind != Value::kTuple) return Err("REDUCE of a non-callable");
    if (fn->s == "collections.OrderedDict") {
      if (!args->items.empty()) return Err("OrderedDict with arguments");
      return New(Value::kDict);
    }
    if (fn->s == "torch._utils._rebuild_tensor_v2") {
      const auto& a = args->items;
      if (a.size() < 4 || a.size() > 7) return Err("_rebuild_tensor_v2 with a wrong number of arguments");
      if (a[0]->kind != Value::kStorage) return Err("_rebuild_tensor_v2 of a non-storage");
      if (a[1]->kind != Value::kInt || a[1]->i < 0) return Err("_rebuild_tensor_v2 with a bad storage offset");
      Ref t = New(Value::kTensor);
      t->tensor.storage_key = a[0]->s;
      t->tensor.dtype = a[0]->storage.dtype;
      t->tensor.offset = a[1]->i;
      auto shape = Ints(a[2], "size");
      if (!shape.ok()) return shape.status();
      auto stride = Ints(a[3], "stride");
      if (!stride.ok()) return stride.status();
      if (shape->size() != stride->size()) return Err("size and stride of different lengths");
      t->tensor.shape = *shape;
      t->tensor.stride = *stride;
      return t;
    }
    return Err(absl::StrCat("refuses to call ", fn->s));
  }

  absl::StatusOr<Ref> Persistent(const Ref& pid) {
    // ('storage', <storage class>, key, location, numel[, view metadata])
    if (pid->kind != Value::kTuple || pid->items.size() < 5 || pid->items[0]->kind != Value::kString ||
        pid->items[0]->s != "storage") {
      return Err("persistent id is not a storage");
    }
    const auto& a = pid->items;
    if (a[1]->kind != Value::kGlobal || !StorageDtype(a[1]->s)) return Err("persistent id without a storage class");
    if (a[2]->kind != Value::kString || a[2]->s.empty() || a[2]->s.size() > 64) return Err("bad storage key");
    for (char c : a[2]->s) {
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_')) {
        return Err("bad storage key");
      }
    }
    if (a[4]->kind != Value::kInt || a[4]->i < 0) return Err("bad storage size");
    if (a.size() > 5 && a[5]->kind != Value::kNone) return Err("storage views (legacy view metadata) are not supported");
    Ref s = New(Value::kStorage);
    s->s = a[2]->s;
    s->storage = {*StorageDtype(a[1]->s), a[4]->i};
    auto [it, inserted] = storages_.emplace(s->s, s->storage);
    if (!inserted && (it->second.dtype != s->storage.dtype || it->second.numel != s->storage.numel)) {
      return Err(absl::StrCat("storage ", s->s, " declared twice differently"));
    }
    return s;
  }

  absl::Status Step(unsigned char op) {
    switch (op) {
      case 0x80: return Take(1).status();  // PROTO
      case 0x95: return Take(8).status();  // FRAME
      case '}': return Push(New(Value::kDict));
      case ']': return Push(New(Value::kList));
      case ')': return Push(New(Value::kTuple));
      case '(':
        if (marks_.size() >= kMaxDepth) return Err("too many MARKs");
        marks_.push_back(stack_.size());
        return absl::OkStatus();
      case 't': case 'l': {  // TUPLE, LIST
        auto items = PopMark();
        if (!items.ok()) return items.status();
        Ref v = New(op == 't' ? Value::kTuple : Value::kList);
        v->items = std::move(*items);
        return Push(v);
      }
      case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
        const size_t n = op - 0x84u;
        Ref v = New(Value::kTuple);
        v->items.resize(n);
        for (size_t k = n; k-- > 0;) {
          auto e = Pop();
          if (!e.ok()) return e.status();
          v->items[k] = *e;
        }
        return Push(v);
      }
      case 'd': {  // DICT
        auto items = PopMark();
        if (!items.ok()) return items.status();
        Ref v = New(Value::kDict);
        if (auto s = SetItems(v, *items); !s.ok()) return s;
        return Push(v);
      }
      case 'a': {  // APPEND
        auto e = Pop();
        if (!e.ok()) return e.status();
        auto list = Top();
        if (!list.ok()) return list.status();
        if ((*list)->kind != Value::kList) return Err("APPEND to a non-list");
        (*list)->items.push_back(*e);
        return absl::OkStatus();
      }
      case 'e': {  // APPENDS
        auto items = PopMark();
        if (!items.ok()) return items.status();
        auto list = Top();
        if (!list.ok()) return list.status();
        if ((*list)->kind != Value::kList) return Err("APPENDS to a non-list");
        for (auto& e : *items) (*list)->items.push_back(e);
        return absl::OkStatus();
      }
      case 's': {  // SETITEM
        auto v = Pop();
        if (!v.ok()) return v.status();
        auto k = Pop();
        if (!k.ok()) return k.status();
        auto d = Top();
        if (!d.ok()) return d.status();
        return SetItems(*d, {*k, *v});
      }
      case 'u': {  // SETITEMS
        auto items = PopMark();
        if (!items.ok()) return items.status();
        auto d = Top();
        if (!d.ok()) return d.status();
        return SetItems(*d, *items);
      }
      case 'q': { auto k = Le(1); return k.ok() ? Memo(*k) : k.status(); }          // BINPUT
      case 'r': { auto k = Le(4); return k.ok() ? Memo(*k) : k.status(); }          // LONG_BINPUT
      case 0x94: return Memo(memo_.size());                                          // MEMOIZE
      case 'h': { auto k = Le(1); return k.ok() ? Get(*k) : k.status(); }           // BINGET
      case 'j': { auto k = Le(4); return k.ok() ? Get(*k) : k.status(); }           // LONG_BINGET
      case 'J': { auto v = Le(4); return v.ok() ? Int(static_cast<int32_t>(*v)) : v.status(); }  // BININT
      case 'K': { auto v = Le(1); return v.ok() ? Int(static_cast<int64_t>(*v)) : v.status(); }  // BININT1
      case 'M': { auto v = Le(2); return v.ok() ? Int(static_cast<int64_t>(*v)) : v.status(); }  // BININT2
      case 0x8a: {  // LONG1
        auto n = Le(1);
        if (!n.ok()) return n.status();
        auto raw = Take(*n);
        if (!raw.ok()) return raw.status();
        if (*n > 8) {  // only the legacy magic number is this long
          Ref big = New(Value::kBigInt);
          big->s = std::string(*raw);
          return Push(big);
        }
        uint64_t v = 0;
        for (size_t k = *n; k-- > 0;) v = (v << 8) | static_cast<unsigned char>((*raw)[k]);
        if (*n > 0 && *n < 8 && (static_cast<unsigned char>((*raw)[*n - 1]) & 0x80)) v |= ~uint64_t{0} << (8 * *n);
        return Int(static_cast<int64_t>(v));
      }
      case 'G': {  // BINFLOAT, big-endian
        auto raw = Take(8);
        if (!raw.ok()) return raw.status();
        uint64_t bits = 0;
        for (char c : *raw) bits = (bits << 8) | static_cast<unsigned char>(c);
        Ref v = New(Value::kFloat);
        std::memcpy(&v->f, &bits, 8);
        return Push(v);
      }
      case 'X': { auto n = Le(4); return n.ok() ? String(Value::kString, *n) : n.status(); }     // BINUNICODE
      case 0x8c: { auto n = Le(1); return n.ok() ? String(Value::kString, *n) : n.status(); }    // SHORT_BINUNICODE
      case 0x8d: { auto n = Le(8); return n.ok() ? String(Value::kString, *n) : n.status(); }    // BINUNICODE8
      case 'U': { auto n = Le(1); return n.ok() ? String(Value::kString, *n) : n.status(); }     // SHORT_BINSTRING
      case 'T': { auto n = Le(4); return n.ok() ? String(Value::kString, *n) : n.status(); }     // BINSTRING
      case 'C': { auto n = Le(1); return n.ok() ? String(Value::kBytes, *n) : n.status(); }      // SHORT_BINBYTES
      case 'B': { auto n = Le(4); return n.ok() ? String(Value::kBytes, *n) : n.status(); }      // BINBYTES
      case 'N': return Push(New(Value::kNone));
      case 0x88: case 0x89: {  // NEWTRUE, NEWFALSE
        Ref v = New(Value::kBool);
        v->i = op == 0x88;
        return Push(v);
      }
      case 'c': {  // GLOBAL
        auto module = Line();
        if (!module.ok()) return module.status();
        auto name = Line();
        if (!name.ok()) return name.status();
        return Global(*module, *name);
      }
      case 0x93: {  // STACK_GLOBAL
        auto name = Pop();
        if (!name.ok()) return name.status();
        auto module = Pop();
        if (!module.ok()) return module.status();
        if ((*name)->kind != Value::kString || (*module)->kind != Value::kString) return Err("STACK_GLOBAL of non-strings");
        return Global((*module)->s, (*name)->s);
      }
      case 'R': {  // REDUCE
        auto args = Pop();
        if (!args.ok()) return args.status();
        auto fn = Pop();
        if (!fn.ok()) return fn.status();
        auto v = Reduce(*fn, *args);
        if (!v.ok()) return v.status();
        return Push(*v);
      }
      case 'b': {  // BUILD: a state_dict's _metadata (a dict's attributes) is dropped
        auto state = Pop();
        if (!state.ok()) return state.status();
        auto obj = Top();
        if (!obj.ok()) return obj.status();
        if ((*obj)->kind != Value::kDict) return Err(absl::StrCat("BUILD of a ", KindName((*obj)->kind)));
        return absl::OkStatus();
      }
      case 'Q': {  // BINPERSID
        auto pid = Pop();
        if (!pid.ok()) return pid.status();
        auto s = Persistent(*pid);
        if (!s.ok()) return s.status();
        return Push(*s);
      }
      case '0': return Pop().status();  // POP
      case '.': return absl::OkStatus();  // STOP
      default: return Err(absl::StrFormat("refuses pickle opcode 0x%02x", op));
    }
  }

 public:
  const std::map<std::string, PickledStorage>& storages() const { return storages_; }

 private:
  std::string_view b_;
  std::string source_;
  std::vector<Ref> all_;  // every value made, for ~Machine
  size_t pos_ = 0;
  std::vector<Ref> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, Ref> memo_;
  std::map<std::string, PickledStorage> storages_;
};

absl::StatusOr<PickledStateDict> StateDictFrom(const Ref& root, const std::map<std::string, PickledStorage>& storages,
                                               const std::string& source) {
  // HF checkpoints are a flat name -> tensor dict; some trainers nest it under "state_dict" or "model".
  Ref dict = root;
  if (dict->kind == Value::kDict) {
    for (const auto& [k, v] : dict->entries) {
      if (k->kind == Value::kString && (k->s == "state_dict" || k->s == "model") && v->kind == Value::kDict &&
          dict->entries.size() <= 4) {
        dict = v;
        break;
      }
    }
  }
  if (dict->kind != Value::kDict) return Bad(source, absl::StrCat("holds a ", KindName(dict->kind), ", not a state_dict"));
  PickledStateDict out;
  out.storages = storages;
  for (const auto& [k, v] : dict->entries) {
    if (k->kind != Value::kString) return Bad(source, "a state_dict key is not a string");
    if (v->kind != Value::kTensor) return Bad(source, absl::StrCat(k->s, ": a ", KindName(v->kind), ", not a tensor"));
    out.tensors.emplace_back(k->s, v->tensor);
  }
  return out;
}

}  // namespace

absl::StatusOr<PickledStateDict> ParseStateDictPickle(std::string_view pickle, const std::string& source) {
  Machine m(pickle, source);
  size_t at = 0;
  auto root = m.Run(&at);
  if (!root.ok()) return root.status();
  return StateDictFrom(*root, m.storages(), source);
}

absl::StatusOr<SafeTensor> Materialize(const PickledTensor& t, std::string_view storage, const std::string& source) {
  const int es = DtypeSize(t.dtype);
  if (es <= 0) return Bad(source, absl::StrCat("unknown dtype ", t.dtype));
  const uint64_t numel_storage = storage.size() / static_cast<size_t>(es);
  // The largest element index the view touches, with overflow checks.
  uint64_t count = 1, last = static_cast<uint64_t>(t.offset);
  constexpr uint64_t kLimit = uint64_t{1} << 40;
  for (size_t d = 0; d < t.shape.size(); ++d) {
    const auto n = static_cast<uint64_t>(t.shape[d]), st = static_cast<uint64_t>(t.stride[d]);
    if (n > kLimit || st > kLimit) return Bad(source, "tensor size or stride out of range");
    count *= n;
    if (count > kLimit) return Bad(source, "tensor too large");
    if (n > 0) last += (n - 1) * st;
    if (last > kLimit) return Bad(source, "tensor view out of range");
  }
  SafeTensor out;
  out.dtype = t.dtype;
  out.shape = t.shape;
  if (count == 0) return out;
  if (last >= numel_storage) {
    return Bad(source, absl::StrCat("tensor of storage ", t.storage_key, " reaches element ", last, " of ", numel_storage));
  }
  out.data.resize(count * static_cast<uint64_t>(es));
  // Gather row by row along the last dimension (contiguous when its stride is 1).
  const size_t rank = t.shape.size();
  std::vector<int64_t> idx(rank, 0);
  const uint64_t inner = rank ? static_cast<uint64_t>(t.shape.back()) : 1;
  const uint64_t inner_stride = rank ? static_cast<uint64_t>(t.stride.back()) : 1;
  char* dst = out.data.data();
  for (uint64_t row = 0; row < count / inner; ++row) {
    uint64_t base = static_cast<uint64_t>(t.offset);
    for (size_t d = 0; d + 1 < rank; ++d) base += static_cast<uint64_t>(idx[d]) * static_cast<uint64_t>(t.stride[d]);
    if (inner_stride == 1) {
      std::memcpy(dst, storage.data() + base * static_cast<uint64_t>(es), inner * static_cast<uint64_t>(es));
      dst += inner * static_cast<uint64_t>(es);
    } else {
      for (uint64_t k = 0; k < inner; ++k, dst += es) {
        std::memcpy(dst, storage.data() + (base + k * inner_stride) * static_cast<uint64_t>(es), static_cast<size_t>(es));
      }
    }
    for (size_t d = rank >= 1 ? rank - 1 : 0; d-- > 0;) {  // next index over the outer dimensions
      if (++idx[d] < t.shape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

absl::StatusOr<SafeTensorsFile> ReadLegacyTorchFile(std::string_view bytes, const std::string& source) {
  Machine m(bytes, source);
  size_t at = 0;
  // 1. magic number 0x1950a86a20f9469cfc6c, 2. protocol version 1001, 3. system info.
  auto magic = m.Run(&at);
  if (!magic.ok()) return magic.status();
  static const char kMagic[] = "\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";
  if ((*magic)->kind != Value::kBigInt || (*magic)->s != std::string(kMagic, 10)) {
    return Bad(source, "not a PyTorch file (no magic number)");
  }
  auto protocol = m.Run(&at);
  if (!protocol.ok()) return protocol.status();
  if ((*protocol)->kind != Value::kInt || (*protocol)->i != 1001) return Bad(source, "unknown legacy protocol version");
  auto info = m.Run(&at);
  if (!info.ok()) return info.status();
  if ((*info)->kind != Value::kDict) return Bad(source, "bad system info");
  for (const auto& [k, v] : (*info)->entries) {
    if (k->kind == Value::kString && k->s == "little_endian" && !(v->kind == Value::kBool && v->i == 1)) {
      return Bad(source, "written on a big-endian machine");
    }
  }
  // 4. the state_dict, 5. the storage keys in file order, 6. the storages.
  auto root = m.Run(&at);
  if (!root.ok()) return root.status();
  auto dict = StateDictFrom(*root, m.storages(), source);
  if (!dict.ok()) return dict.status();
  auto keys = m.Run(&at);
  if (!keys.ok()) return keys.status();
  if ((*keys)->kind != Value::kList) return Bad(source, "storage key list missing");
  std::map<std::string, std::string_view> data;
  for (const auto& k : (*keys)->items) {
    if (k->kind != Value::kString) return Bad(source, "a storage key is not a string");
    auto it = dict->storages.find(k->s);
    if (it == dict->storages.end()) return Bad(source, absl::StrCat("storage ", k->s, " listed but never used"));
    if (bytes.size() - at < 8) return Bad(source, "truncated storage");
    uint64_t numel = 0;
    for (size_t b = 8; b-- > 0;) numel = (numel << 8) | static_cast<unsigned char>(bytes[at + b]);
    at += 8;
    const uint64_t es = static_cast<uint64_t>(DtypeSize(it->second.dtype));
    if (numel != static_cast<uint64_t>(it->second.numel) || numel > (bytes.size() - at) / es) {
      return Bad(source, absl::StrCat("storage ", k->s, ": size does not match the file"));
    }
    data[k->s] = bytes.substr(at, numel * es);
    at += numel * es;
  }
  SafeTensorsFile out;
  for (const auto& [name, t] : dict->tensors) {
    auto it = data.find(t.storage_key);
    if (it == data.end()) return Bad(source, absl::StrCat(name, ": its storage is not in the file"));
    auto st = Materialize(t, it->second, source + ": " + name);
    if (!st.ok()) return st.status();
    out.tensors[name] = std::move(*st);
  }
  return out;
}

}  // namespace attune::common
