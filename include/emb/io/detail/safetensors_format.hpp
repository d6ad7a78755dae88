// emb/io/detail/safetensors_format.hpp — needs nlohmann/json (Debian: nlohmann-json3-dev).
// The safetensors format for emb/io/safetensors.hpp: its dtypes, the checks a file must pass,
// the conversion of stored values, and the header the writer produces.
//
// A file is an 8-byte little-endian header length N, N bytes of UTF-8 JSON
// ({"name": {"dtype": "F32", "shape": [r, c], "data_offsets": [begin, end]}, ...,
//   "__metadata__": {"key": "value"}}), then the tensors' bytes, little-endian, row-major, with
// offsets counted from the end of the header. The rules here are those of the format's
// reference implementation (the Rust crate `safetensors`): the same files are accepted and
// refused, each refusal with a message naming the fault.
//
// The header is parsed by nlohmann/json's event (SAX) interface rather than into a JSON tree:
// only names, dtypes, shapes and offsets are kept, so memory stays proportional to what the
// header describes, never to its nesting, and duplicate keys are seen (a tree keeps only one).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../../detail/error.hpp"
#include "../../index_span.hpp"
#include "../file_error.hpp"
#include "file.hpp"
#include "parse.hpp"

namespace emb::io {

// One tensor of a safetensors file, as its header describes it.
struct TensorInfo {
  std::string dtype;                 // "F32", "BF16", "I64", ... (any dtype of the format)
  std::vector<std::uint64_t> shape;  // row-major; [] for a scalar
  std::uint64_t begin = 0;           // data_offsets: [begin, end) counted from the first byte
  std::uint64_t end = 0;             //   after the header
  std::uint64_t offset = 0;          // the first byte's offset in the file: 8 + N + begin

  std::uint64_t size_bytes() const noexcept { return end - begin; }
  // Number of elements (the product of shape; 1 for a scalar).
  std::uint64_t numel() const noexcept {
    std::uint64_t n = 1;
    for (const auto d : shape) n *= d;  // cannot overflow: checked when the file was opened
    return n;
  }
};

namespace detail {

// The reference implementation's limit on N.
inline constexpr std::uint64_t safetensors_max_header = 100'000'000;
// Deeper nesting than any header needs is refused (a tensor entry is 3 levels deep), with the
// reference's JSON parser's limit.
inline constexpr std::size_t safetensors_max_depth = 128;

struct SafetensorsDtype {
  const char* name;
  unsigned bits;
};

// Every dtype of the format, in the reference's order of increasing alignment (its writer lays
// tensors out in decreasing order of this, so each starts aligned).
inline constexpr SafetensorsDtype safetensors_dtypes[] = {
    {"BOOL", 8},        {"F4", 4},      {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"U8", 8},
    {"I8", 8},          {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8},
    {"F8_E5M2FNUZ", 8}, {"I16", 16},    {"U16", 16},    {"F16", 16},    {"BF16", 16},
    {"I32", 32},        {"U32", 32},    {"F32", 32},    {"C64", 64},    {"F64", 64},
    {"I64", 64},        {"U64", 64},
};

inline const SafetensorsDtype* find_safetensors_dtype(std::string_view name) noexcept {
  for (const auto& d : safetensors_dtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

inline std::string safetensors_dtype_list() {
  std::string out;
  for (const auto& d : safetensors_dtypes) {
    if (!out.empty()) out += ", ";
    out += d.name;
  }
  return out;
}

// Offset of the first byte that is not well-formed UTF-8 (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), or text.size() if all of it is.
inline std::size_t first_invalid_utf8(std::string_view text) noexcept {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    unsigned lo = 0x80, hi = 0xbf;  // allowed range of the second byte
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      if (c == 0xe0) lo = 0xa0;  // overlong
      if (c == 0xed) hi = 0x9f;  // surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      if (c == 0xf0) lo = 0x90;  // overlong
      if (c == 0xf4) hi = 0x8f;  // above U+10FFFF
    } else {
      return i;
    }
    if (n - i < len) return i;
    if (s[i + 1] < lo || s[i + 1] > hi) return i;
    for (std::size_t k = 2; k < len; ++k) {
      if (s[i + k] < 0x80 || s[i + k] > 0xbf) return i;
    }
    i += len;
  }
  return n;
}

// A tensor name for a message: JSON-quoted (so that quotes, control characters and empty names
// show), cut after 80 bytes at a character boundary.
inline std::string quoted_name(std::string_view name) {
  std::size_t cut = name.size();
  if (cut > 80) {
    cut = 80;
    while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xc0) == 0x80) --cut;
  }
  std::string shown(name.substr(0, cut));
  if (first_invalid_utf8(shown) != shown.size()) return "'" + printable(shown, 80) + "'";
  return nlohmann::json(shown).dump() + (cut < name.size() ? "..." : "");
}

inline std::string shape_text(const std::vector<std::uint64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size() && i < 16; ++i) {
    out += emb::detail::concat(i ? ", " : "", shape[i]);
  }
  if (shape.size() > 16) out += emb::detail::concat(", ... (", shape.size(), " dimensions)");
  return out + "]";
}

struct SafetensorsLayout {
  std::uint64_t header_size = 0;                            // N
  std::uint64_t data_start = 0;                             // 8 + N
  std::vector<std::pair<std::string, TensorInfo>> tensors;  // in the order of their bytes
  std::map<std::string, std::size_t> index;                 // name -> position in tensors
  std::map<std::string, std::string> metadata;
};

// The events of nlohmann/json's parser, turned into tensor entries. A fault stops the parse:
// the handler records the message and returns false.
class SafetensorsHeaderHandler final : public nlohmann::json_sax<nlohmann::json> {
 public:
  std::vector<std::pair<std::string, TensorInfo>> tensors;  // in header order
  std::map<std::string, std::string> metadata;
  std::string error;
  std::uint64_t error_position = 0;  // where a JSON syntax error is, in bytes into the header

  bool null() override {
    if (state_ == State::metadata_entry) {  // "__metadata__": null is no metadata
      state_ = State::top;
      return true;
    }
    return scalar("null");
  }
  bool boolean(bool) override { return scalar("a boolean"); }
  bool number_integer(number_integer_t v) override {
    // Only a negative number (or "-0") arrives here: the parser reports the others unsigned.
    if (v == 0) return number_unsigned(0);
    return scalar("a negative number", emb::detail::concat(v));
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (state_ == State::shape_array) {
      current().shape.push_back(v);
      return true;
    }
    if (state_ == State::offsets_array) {
      if (offsets_seen_ >= 2) {
        return fail(emb::detail::concat("tensor ", quoted_name(current_name()),
                                        ": data_offsets has more than two entries; it is "
                                        "[begin, end]"));
      }
      (offsets_seen_++ == 0 ? current().begin : current().end) = v;
      return true;
    }
    return scalar("a number", emb::detail::concat(v));
  }
  bool number_float(number_float_t, const string_t& text) override {
    return scalar("a number that is not a non-negative integer", text);
  }
  bool string(string_t& value) override {
    if (state_ == State::dtype_value) {
      if (!find_safetensors_dtype(value)) {
        return fail(emb::detail::concat("tensor ", quoted_name(current_name()),
                                        " has unknown dtype ", quoted_name(value),
                                        "; the format's dtypes are ", safetensors_dtype_list()));
      }
      current().dtype = std::move(value);
      state_ = State::tensor_object;
      return true;
    }
    if (state_ == State::metadata_value) {
      metadata.emplace(std::move(metadata_key_), std::move(value));
      state_ = State::metadata_object;
      return true;
    }
    return scalar("a string", value);
  }
  bool binary(binary_t&) override { return scalar("binary data"); }

  bool start_object(std::size_t) override {
    switch (state_) {
      case State::start:
        state_ = State::top;
        return true;
      case State::metadata_entry:
        state_ = State::metadata_object;
        return true;
      case State::tensor_entry:
        state_ = State::tensor_object;
        have_dtype_ = have_shape_ = have_offsets_ = false;
        return true;
      case State::skip:
        return deeper();
      default:
        return container("an object");
    }
  }
  bool key(string_t& k) override {
    switch (state_) {
      case State::top:
        if (!seen_.insert(k).second) {
          return fail(emb::detail::concat("the name ", quoted_name(k),
                                          " appears twice in the header (names must be unique)"));
        }
        if (k == "__metadata__") {
          state_ = State::metadata_entry;
        } else {
          tensors.emplace_back(std::move(k), TensorInfo{});
          state_ = State::tensor_entry;
        }
        return true;
      case State::metadata_object:
        if (metadata.count(k) != 0) {
          return fail(emb::detail::concat("__metadata__ has the key ", quoted_name(k),
                                          " twice (keys must be unique)"));
        }
        metadata_key_ = std::move(k);
        state_ = State::metadata_value;
        return true;
      case State::tensor_object: {
        bool* have = k == "dtype"          ? &have_dtype_
                     : k == "shape"        ? &have_shape_
                     : k == "data_offsets" ? &have_offsets_
                                           : nullptr;
        // A field the format does not define is skipped, as the reference does.
        if (have == nullptr) {
          state_ = State::skip;
          skip_depth_ = 0;
          return true;
        }
        if (*have) {
          return fail(emb::detail::concat("tensor ", quoted_name(current_name()),
                                          " has the field '", k, "' twice"));
        }
        *have = true;
        state_ = k == "dtype"   ? State::dtype_value
                 : k == "shape" ? State::shape_value
                                : State::offsets_value;
        return true;
      }
      default:  // keys inside a skipped value
        return true;
    }
  }
  bool end_object() override {
    switch (state_) {
      case State::top:
        state_ = State::done;
        return true;
      case State::metadata_object:
        state_ = State::top;
        return true;
      case State::tensor_object: {
        const char* missing = !have_dtype_     ? "dtype"
                              : !have_shape_   ? "shape"
                              : !have_offsets_ ? "data_offsets"
                                               : nullptr;
        if (missing) {
          return fail(emb::detail::concat("tensor ", quoted_name(current_name()), " has no '",
                                          missing,
                                          "' field (each tensor needs dtype, shape and "
                                          "data_offsets)"));
        }
        state_ = State::top;
        return true;
      }
      default:
        return shallower();
    }
  }
  bool start_array(std::size_t) override {
    if (state_ == State::shape_value) {
      state_ = State::shape_array;
      return true;
    }
    if (state_ == State::offsets_value) {
      state_ = State::offsets_array;
      offsets_seen_ = 0;
      return true;
    }
    if (state_ == State::skip) return deeper();
    return container("an array");
  }
  bool end_array() override {
    if (state_ == State::shape_array) {
      state_ = State::tensor_object;
      return true;
    }
    if (state_ == State::offsets_array) {
      if (offsets_seen_ != 2) {
        return fail(emb::detail::concat("tensor ", quoted_name(current_name()),
                                        ": data_offsets has ", offsets_seen_,
                                        " entries; it is [begin, end]"));
      }
      state_ = State::tensor_object;
      return true;
    }
    return shallower();
  }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& e) override {
    // e.what() is "[json.exception.parse_error.101] parse error at line 1, column 5: ..."
    std::string what = e.what();
    const auto bracket = what.find("] ");
    if (bracket != std::string::npos) what = what.substr(bracket + 2);
    error_position = position > 0 ? position - 1 : 0;
    error = "the header is not valid JSON: " + what;
    return false;
  }

 private:
  enum class State {
    start,
    top,
    done,
    metadata_entry,
    metadata_object,
    metadata_value,
    tensor_entry,
    tensor_object,
    dtype_value,
    shape_value,
    shape_array,
    offsets_value,
    offsets_array,
    skip,
  };

  bool fail(std::string message) {
    error = std::move(message);
    return false;
  }
  TensorInfo& current() { return tensors.back().second; }
  const std::string& current_name() const { return tensors.back().first; }

  // A value that is not an object or an array arrived in `state_`.
  bool scalar(const char* kind, const std::string& text = {}) {
    if (state_ == State::skip) {
      if (skip_depth_ == 0) state_ = State::tensor_object;
      return true;
    }
    return wrong(kind, text);
  }
  bool container(const char* kind) { return wrong(kind, {}); }
  bool deeper() {
    if (++skip_depth_ + 3 > safetensors_max_depth) {
      return fail(
          emb::detail::concat("the header nests deeper than ", safetensors_max_depth, " levels"));
    }
    return true;
  }
  bool shallower() {
    // Only reached in State::skip: the other containers are closed above.
    if (--skip_depth_ == 0) state_ = State::tensor_object;
    return true;
  }

  bool wrong(const char* kind, const std::string& text) {
    const std::string found = text.empty()
                                  ? std::string(kind)
                                  : emb::detail::concat(kind, " (", printable(text, 40), ")");
    switch (state_) {
      case State::start:
        return fail("the header is " + found + ", not a JSON object of tensors");
      case State::metadata_entry:
        return fail("__metadata__ is " + found + "; it must be an object whose values are strings");
      case State::metadata_value:
        return fail(emb::detail::concat("__metadata__ maps ", quoted_name(metadata_key_), " to ",
                                        found, "; its values must be strings"));
      case State::tensor_entry:
        return fail(emb::detail::concat("the entry of tensor ", quoted_name(current_name()), " is ",
                                        found,
                                        ", not an object with dtype, shape and data_offsets"));
      case State::dtype_value:
        return fail(emb::detail::concat("tensor ", quoted_name(current_name()), ": dtype is ",
                                        found, ", not a string such as \"F32\""));
      case State::shape_value:
        return fail(emb::detail::concat("tensor ", quoted_name(current_name()), ": shape is ",
                                        found, ", not an array of dimensions"));
      case State::shape_array:
        return fail(emb::detail::concat("tensor ", quoted_name(current_name()), ": shape holds ",
                                        found, "; dimensions are non-negative integers"));
      case State::offsets_value:
        return fail(emb::detail::concat("tensor ", quoted_name(current_name()),
                                        ": data_offsets is ", found, ", not [begin, end]"));
      case State::offsets_array:
        return fail(emb::detail::concat("tensor ", quoted_name(current_name()),
                                        ": data_offsets holds ", found,
                                        "; offsets are non-negative integers"));
      default:
        return fail("unexpected " + found + " in the header");
    }
  }

  State state_ = State::start;
  std::set<std::string> seen_;
  std::string metadata_key_;
  bool have_dtype_ = false, have_shape_ = false, have_offsets_ = false;
  std::size_t offsets_seen_ = 0;
  std::size_t skip_depth_ = 0;
};

// The rules a file must pass are the reference implementation's, checked in its order, each
// fault a FileError (a std::runtime_error) naming the file, the byte and the fault:
//   - the file holds at least the 8-byte header length N;
//   - N is at most 100,000,000 and the file holds 8 + N bytes;
//   - the header is UTF-8, and JSON (an object; no byte-order mark; may be padded with
//     whitespace), of tensor entries {dtype, shape, data_offsets} and an optional __metadata__
//     object of strings; no name twice; every dtype one of the format's;
//   - sorted by offsets, the tensors cover the data from 0 without gap or overlap, each with
//     end >= begin and end - begin equal to its shape's byte length (computed without overflow,
//     a whole number of bytes);
//   - the last tensor ends at the end of the file.

// N, from the first min(8, file_size) bytes of a file of `file_size` bytes, checked against the
// limit and the file's size.
inline std::uint64_t safetensors_header_length(const unsigned char* first, std::uint64_t file_size,
                                               const std::string& name, const char* where) {
  const auto fail = [&](const std::string& problem) {
    throw FileError(where, name, 0, 0, problem);
  };
  if (file_size < 8) {
    fail(emb::detail::concat("the file has ", file_size,
                             " bytes; a safetensors file starts with "
                             "an 8-byte header length (is this a safetensors file?)"));
  }
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | first[i];
  if (n > safetensors_max_header) {
    fail(emb::detail::concat("the header length field says ", n,
                             " bytes, more than the format's limit of ", safetensors_max_header,
                             " (is this a safetensors file?)"));
  }
  if (n > file_size - 8) {
    fail(emb::detail::concat("the header length field says ", n, " bytes, but only ", file_size - 8,
                             " bytes follow it (truncated file?)"));
  }
  return n;
}

// Checks the N header bytes (the bytes after the length field) of a file of `file_size` bytes
// and describes its tensors.
inline SafetensorsLayout parse_safetensors_header(std::string_view header, std::uint64_t file_size,
                                                  const std::string& name, const char* where) {
  const auto fail = [&](std::uint64_t at, const std::string& problem) {
    throw FileError(where, name, 0, at, problem);
  };
  const std::uint64_t n = header.size();
  const std::size_t bad = first_invalid_utf8(header);
  if (bad != header.size()) {
    fail(8 + bad, emb::detail::concat("the header is not valid UTF-8 (byte 0x",
                                      printable(header.substr(bad, 1)).substr(2), ")"));
  }
  if (header.size() >= 3 && header.compare(0, 3, "\xef\xbb\xbf") == 0) {
    fail(8, "the header starts with a byte-order mark; it must start with '{' (or whitespace)");
  }
  // A raw NUL is never JSON (not even inside a string), and nlohmann/json's reader would take
  // it for the end of the input, accepting whatever follows.
  if (const std::size_t nul = header.find('\0'); nul != std::string_view::npos) {
    fail(8 + nul, "the header is not valid JSON: it holds a NUL byte");
  }

  SafetensorsHeaderHandler handler;
  const bool parsed = nlohmann::json::sax_parse(header.data(), header.data() + header.size(),
                                                &handler, nlohmann::json::input_format_t::json,
                                                /*strict=*/true, /*ignore_comments=*/false);
  if (!parsed) fail(8 + handler.error_position, handler.error);

  SafetensorsLayout layout;
  layout.header_size = n;
  layout.data_start = 8 + n;
  layout.metadata = std::move(handler.metadata);
  layout.tensors = std::move(handler.tensors);
  // The order of the bytes in the file: by (begin, end), header order among equals (tensors
  // with no bytes may share an offset).
  std::stable_sort(layout.tensors.begin(), layout.tensors.end(), [](const auto& a, const auto& b) {
    return std::make_pair(a.second.begin, a.second.end) <
           std::make_pair(b.second.begin, b.second.end);
  });

  const std::uint64_t data_size = file_size - 8 - n;
  std::uint64_t expected = 0;             // where the next tensor must begin
  const std::string* previous = nullptr;  // the tensor that ends there
  for (auto& [tensor, info] : layout.tensors) {
    const std::string who = "tensor " + quoted_name(tensor);
    const std::string range =
        emb::detail::concat("data_offsets [", info.begin, ", ", info.end, "]");
    if (info.end < info.begin) fail(8, who + ": " + range + " end before they begin");
    if (info.begin > expected) {
      fail(8, emb::detail::concat(who, ": ", range, " leave a gap: bytes [", expected, ", ",
                                  info.begin, ") of the data belong to no tensor"));
    }
    if (info.begin < expected) {  // then a tensor came before (expected > 0)
      fail(8, emb::detail::concat(who, ": ", range, " overlap the bytes of tensor ",
                                  quoted_name(*previous), ", which end at ", expected));
    }
    const SafetensorsDtype* dtype = find_safetensors_dtype(info.dtype);
    std::uint64_t elements = 1;
    for (const std::uint64_t d : info.shape) {
      if (d != 0 && elements > std::numeric_limits<std::uint64_t>::max() / d) {
        fail(8, who + ": shape " + shape_text(info.shape) +
                    " has more elements than 64 bits can count");
      }
      elements *= d;
    }
    if (elements > std::numeric_limits<std::uint64_t>::max() / dtype->bits) {
      fail(8, who + ": shape " + shape_text(info.shape) + " of " + info.dtype +
                  " is more bits than 64 bits can count");
    }
    const std::uint64_t bits = elements * dtype->bits;
    if (bits % 8 != 0) {
      fail(8, emb::detail::concat(who, ": shape ", shape_text(info.shape), " of ", info.dtype, " (",
                                  dtype->bits, "-bit values) is not a whole number of bytes"));
    }
    if (info.end - info.begin != bits / 8) {
      fail(8, emb::detail::concat(who, ": shape ", shape_text(info.shape), " of ", info.dtype,
                                  " needs ", bits / 8, " bytes, but ", range, " hold ",
                                  info.end - info.begin));
    }
    info.offset = layout.data_start + info.begin;
    expected = info.end;
    previous = &tensor;
  }
  if (expected != data_size) {
    if (expected < data_size) {
      const std::uint64_t extra = data_size - expected;
      fail(layout.data_start + expected,
           emb::detail::concat("the tensors end ", expected, " bytes after the header, but the "
                               "file has ", extra, " more bytes that belong to no tensor"));
    }
    fail(file_size, emb::detail::concat("the tensors need ", expected, " bytes after the header, "
                                        "but the file has only ", data_size,
                                        " (truncated file?)"));
  }
  for (std::size_t i = 0; i < layout.tensors.size(); ++i) {
    layout.index.emplace(layout.tensors[i].first, i);
  }
  return layout;
}

// The whole check of a file held in memory (the fuzzer's entry).
inline SafetensorsLayout parse_safetensors(const unsigned char* data, std::uint64_t size,
                                           const std::string& name, const char* where) {
  const std::uint64_t n = safetensors_header_length(data, size, name, where);
  return parse_safetensors_header(
      std::string_view(reinterpret_cast<const char*>(data) + 8, static_cast<std::size_t>(n)), size,
      name, where);
}

// A tensor as a (rows, cols) matrix: the last dimension is the columns, the others are
// flattened into rows (a scalar is 1 x 1, a vector 1 x n), as NumPy's reshape(-1, shape[-1])
// reads row-major data. Throws if a side does not fit in Index (only possible with no elements).
inline std::pair<Index, Index> safetensors_matrix_shape(const TensorInfo& info,
                                                        const std::string& tensor,
                                                        const std::string& path,
                                                        const char* where) {
  constexpr auto max = static_cast<std::uint64_t>(std::numeric_limits<Index>::max());
  std::uint64_t rows = 1;
  bool fits = true;
  for (std::size_t i = 0; i + 1 < info.shape.size(); ++i) {
    if (info.shape[i] != 0 && rows > max / info.shape[i]) fits = false;
    rows *= info.shape[i];
  }
  const std::uint64_t cols = info.shape.empty() ? 1 : info.shape.back();
  if (!fits || rows > max || cols > max) {
    throw FileError(where, path, 0, info.offset,
                    "tensor " + quoted_name(tensor) + ": shape " + shape_text(info.shape) +
                        " does not fit a matrix with 63-bit sides");
  }
  return {static_cast<Index>(rows), static_cast<Index>(cols)};
}

inline bool safetensors_convertible(std::string_view dtype) noexcept {
  return dtype == "F64" || dtype == "F32" || dtype == "F16" || dtype == "BF16";
}

// Converts `count` stored values of `dtype` (F64, F32, F16 or BF16, little-endian) at `bytes`
// (any alignment) to T: F16 and BF16 exactly, F32 to double exactly, F64 to float rounded to
// nearest.
template <class T>
void convert_safetensors_values(std::string_view dtype, const unsigned char* bytes,
                                std::size_t count, T* out) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "T is float or double");
  const bool swap = !host_is_little_endian();
  if (!swap && ((dtype == "F32" && std::is_same_v<T, float>) ||
                (dtype == "F64" && std::is_same_v<T, double>))) {
    if (count != 0) std::memcpy(out, bytes, count * sizeof(T));
  } else if (dtype == "F64") {
    for (std::size_t i = 0; i < count; ++i)
      out[i] = static_cast<T>(read_ieee<8>(bytes + 8 * i, swap));
  } else if (dtype == "F32") {
    for (std::size_t i = 0; i < count; ++i)
      out[i] = static_cast<T>(read_ieee<4>(bytes + 4 * i, swap));
  } else if (dtype == "F16") {
    for (std::size_t i = 0; i < count; ++i)
      out[i] = static_cast<T>(read_ieee<2>(bytes + 2 * i, swap));
  } else {
    // bfloat16 is the top half of a binary32: widening is a 16-bit shift, exact.
    for (std::size_t i = 0; i < count; ++i) {
      const unsigned char* p = bytes + 2 * i;
      const std::uint32_t word =
          (static_cast<std::uint32_t>(p[0]) << 16) | (static_cast<std::uint32_t>(p[1]) << 24);
      float f = 0;
      std::memcpy(&f, &word, sizeof f);
      out[i] = static_cast<T>(f);
    }
  }
}

// The header the reference writer produces for these tensors (all of one dtype, so its order —
// decreasing alignment, then name — is by name): compact JSON with __metadata__ first, padded
// with spaces to a multiple of 8 bytes so that the data, and with it every tensor, starts
// aligned. `entries` are (name, rows, cols) sorted by name; offsets follow from the sizes.
inline std::string safetensors_header(
    const std::vector<std::tuple<std::string, Index, Index>>& entries, const char* dtype,
    std::size_t item_size, const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  std::uint64_t offset = 0;
  for (const auto& [tensor, rows, cols] : entries) {
    const std::uint64_t bytes =
        static_cast<std::uint64_t>(rows) * static_cast<std::uint64_t>(cols) * item_size;
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = dtype;
    entry["shape"] = {static_cast<std::uint64_t>(rows), static_cast<std::uint64_t>(cols)};
    entry["data_offsets"] = {offset, offset + bytes};
    header[tensor] = std::move(entry);
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

}  // namespace detail
}  // namespace emb::io
