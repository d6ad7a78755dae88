// emb/io/npy.hpp — NumPy .npy files: how tables move between PyTorch and emb.
//
//   Python:  np.save("w.npy", emb.weight.detach().numpy())
//   C++:     emb::Matrix<float> w = emb::io::load_npy<float>("w.npy");
//   C++:     emb::io::save_npy<float>("w.npy", table.weight());
//   Python:  torch.from_numpy(np.load("w.npy"))
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "../detail/error.hpp"
#include "../index_span.hpp"
#include "detail/file.hpp"
#include "detail/parse.hpp"

namespace emb::io {

class NpyLoadOptions {
 public:
  // Called as rows arrive (see emb::io::Progress).
  NpyLoadOptions& progress(Progress callback) {
    progress_ = std::move(callback);
    return *this;
  }
  const Progress& progress() const { return progress_; }

 private:
  Progress progress_;
};

// What a .npy header says, as far as emb reads it.
struct NpyHeader {
  int major_version = 0;
  char byte_order = '<';      // '<' little-endian, '>' big-endian
  std::size_t item_size = 0;  // 2, 4 or 8 (binary16, binary32, binary64)
  bool fortran_order = false;
  Index rows = 0;
  Index cols = 0;
  std::uint64_t data_offset = 0;  // where the array data starts
};

namespace detail {

inline constexpr const char* npy_load_where = "emb::io::load_npy";

// Parses the Python dict literal of a .npy header. `base` is its offset in the file, and
// `where` the function named, for messages.
class NpyDictParser {
 public:
  NpyDictParser(std::string_view text, std::uint64_t base, const ByteSource& source,
                const char* where = npy_load_where)
      : text_(text), base_(base), source_(source), where_(where) {}

  void parse(NpyHeader& header) {
    bool have_descr = false, have_order = false, have_shape = false;
    skip_space();
    expect('{', "'{' opening the header dictionary");
    for (;;) {
      skip_space();
      if (peek() == '}') {
        ++pos_;
        break;
      }
      const std::size_t key_at = pos_;
      const std::string_view key = string_literal("a quoted key");
      skip_space();
      expect(':', "':' after the key");
      skip_space();
      if (key == "descr") {
        if (have_descr) fail(key_at, "key 'descr' appears twice");
        have_descr = true;
        parse_descr(header);
      } else if (key == "fortran_order") {
        if (have_order) fail(key_at, "key 'fortran_order' appears twice");
        have_order = true;
        header.fortran_order = boolean();
      } else if (key == "shape") {
        if (have_shape) fail(key_at, "key 'shape' appears twice");
        have_shape = true;
        parse_shape(header);
      } else {
        fail(key_at, "unexpected key '" + printable(key) +
                         "'; a .npy header holds exactly 'descr', 'fortran_order' and 'shape'");
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_space();
      expect('}', "',' or '}' after a value");
      break;
    }
    skip_space();
    if (pos_ != text_.size()) {
      fail(pos_, "unexpected '" + printable(text_.substr(pos_)) + "' after the header dictionary");
    }
    if (!have_descr) fail(pos_, "the header has no 'descr' key");
    if (!have_order) fail(pos_, "the header has no 'fortran_order' key");
    if (!have_shape) fail(pos_, "the header has no 'shape' key");
  }

 private:
  [[noreturn]] void fail(std::size_t at, const std::string& problem) const {
    throw FileError(where_, source_.name(), 0, base_ + at, "in the .npy header: " + problem);
  }
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }
  void expect(char c, const char* what) {
    if (peek() != c) {
      fail(pos_, std::string("expected ") + what + ", found " + found());
    }
    ++pos_;
  }
  std::string found() const {
    if (pos_ >= text_.size()) return "the end of the header";
    return "'" + printable(text_.substr(pos_), 16) + "'";
  }

  std::string_view string_literal(const char* what) {
    const char quote = peek();
    if (quote != '\'' && quote != '"')
      fail(pos_, std::string("expected ") + what + ", found " + found());
    const std::size_t start = ++pos_;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      if (text_[pos_] == '\\') fail(pos_, "escape sequences are not expected in a .npy header");
      ++pos_;
    }
    if (pos_ >= text_.size()) fail(start - 1, "unterminated string");
    return text_.substr(start, pos_++ - start);
  }

  bool boolean() {
    if (text_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (text_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    fail(pos_, "expected True or False for 'fortran_order', found " + found());
  }

  void parse_descr(NpyHeader& header) {
    if (peek() == '[') {
      fail(pos_, "structured dtypes are not supported; expected '<f2', '<f4' or '<f8'");
    }
    const std::size_t at = pos_;
    const std::string_view descr = string_literal("a dtype string for 'descr'");
    const std::string shown = "'" + printable(descr) + "'";
    if (descr.size() >= 2 && descr[1] == 'O') {
      fail(at,
           "object arrays (descr " + shown + ") cannot be loaded; expected '<f2', '<f4' or '<f8'");
    }
    if (descr.size() == 3 && (descr[0] == '<' || descr[0] == '>' || descr[0] == '=') &&
        descr[1] == 'f' && (descr[2] == '2' || descr[2] == '4' || descr[2] == '8')) {
      header.byte_order = descr[0] == '=' ? (host_is_little_endian() ? '<' : '>') : descr[0];
      header.item_size = static_cast<std::size_t>(descr[2] - '0');
      return;
    }
    fail(at, "unsupported dtype " + shown + "; expected '<f2', '<f4' or '<f8' (or big-endian '>')");
  }

  void parse_shape(NpyHeader& header) {
    const std::size_t at = pos_;
    expect('(', "a tuple for 'shape'");
    std::vector<std::uint64_t> dims;
    for (;;) {
      skip_space();
      if (peek() == ')') {
        ++pos_;
        break;
      }
      const std::size_t num_at = pos_;
      std::uint64_t v = 0;
      bool any = false;
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
        const auto digit = static_cast<std::uint64_t>(text_[pos_] - '0');
        if (v > (static_cast<std::uint64_t>(std::numeric_limits<Index>::max()) - digit) / 10) {
          fail(num_at, "a dimension in 'shape' is too large");
        }
        v = v * 10 + digit;
        any = true;
        ++pos_;
      }
      if (!any) fail(num_at, "expected a non-negative integer in 'shape', found " + found());
      if (peek() == 'L') ++pos_;  // files written by Python 2 say (3L, 4L)
      dims.push_back(v);
      if (dims.size() > 32) fail(num_at, "'shape' has more than 32 dimensions");
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect(')', "',' or ')' in 'shape'");
      break;
    }
    if (dims.size() != 2) {
      std::string tuple = "(";
      for (std::size_t i = 0; i < dims.size(); ++i) {
        tuple += emb::detail::concat(i ? ", " : "", dims[i]);
      }
      tuple += dims.size() == 1 ? ",)" : ")";
      fail(at, emb::detail::concat("expected a 2-D array, but 'shape' is ", tuple, " (",
                                   dims.size(), " dimensions)"));
    }
    header.rows = static_cast<Index>(dims[0]);
    header.cols = static_cast<Index>(dims[1]);
  }

  std::string_view text_;
  std::uint64_t base_;
  const ByteSource& source_;
  const char* where_;
  std::size_t pos_ = 0;
};

// Reads and checks the header; on return the source is positioned at the data, and the data's
// size has been checked against the source's size. Errors name `where` (the caller).
inline NpyHeader read_npy_header(ByteSource& source, const char* where = npy_load_where) {
  const std::string& name = source.name();
  const auto fail = [&](std::uint64_t at, const std::string& problem) {
    throw FileError(where, name, 0, at, problem);
  };
  const std::uint64_t file_size = source.size();
  unsigned char preamble[12] = {};
  const std::size_t got = source.read(preamble, 8);
  static constexpr unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (got < 6 || std::memcmp(preamble, magic, 6) != 0) {
    fail(0, "expected the .npy magic string \\x93NUMPY, found '" +
                printable(std::string_view(reinterpret_cast<const char*>(preamble), got)) +
                "' (is this a .npy file?)");
  }
  if (got < 8) fail(got, "file ends inside the .npy preamble");
  NpyHeader header;
  const int major = preamble[6], minor = preamble[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0) {
    fail(6, emb::detail::concat("unsupported .npy format version ", major, ".", minor,
                                "; expected 1.0, 2.0 or 3.0"));
  }
  header.major_version = major;
  const std::size_t len_bytes = major == 1 ? 2 : 4;
  if (source.read(preamble + 8, len_bytes) != len_bytes) {
    fail(8, "file ends inside the .npy header length");
  }
  std::uint64_t header_len = 0;
  for (std::size_t i = 0; i < len_bytes; ++i) {
    header_len |= static_cast<std::uint64_t>(preamble[8 + i]) << (8 * i);
  }
  const std::uint64_t header_start = 8 + len_bytes;
  if (file_size < header_start || header_len > file_size - header_start) {
    fail(8, emb::detail::concat("the header length field says ", header_len, " bytes, but only ",
                                file_size > header_start ? file_size - header_start : 0,
                                " bytes follow it (truncated file?)"));
  }
  std::string text(static_cast<std::size_t>(header_len), '\0');
  if (source.read(text.data(), text.size()) != text.size()) {
    fail(header_start, "file ends inside the .npy header");
  }
  NpyDictParser(text, header_start, source, where).parse(header);
  header.data_offset = header_start + header_len;

  // rows * cols * item_size must fit in what follows the header (checked without overflow).
  const std::uint64_t available = file_size - header.data_offset;
  const auto rows = static_cast<std::uint64_t>(header.rows);
  const auto cols = static_cast<std::uint64_t>(header.cols);
  const std::uint64_t max_elements = available / header.item_size;
  const std::string shape = emb::detail::concat("shape (", header.rows, ", ", header.cols, ")");
  if (rows != 0 && cols != 0 && (cols > max_elements / rows)) {
    fail(header.data_offset,
         emb::detail::concat(shape, " of ", header.item_size,
                             "-byte values needs more data than the ", available,
                             " bytes after the header (truncated file?)"));
  }
  return header;
}

// Reads the data described by `header` into a (rows, cols) matrix: straight into its storage
// when the file holds C-order values of T's own format, through a small staging buffer
// otherwise. Either way the table exists once in memory.
template <class T>
Matrix<T> read_npy_data(ByteSource& source, const NpyHeader& header,
                        const NpyLoadOptions& options) {
  const std::string& name = source.name();
  Matrix<T> m(header.rows, header.cols);
  const auto rows = header.rows, cols = header.cols;
  if (rows == 0 || cols == 0) return m;
  ProgressReporter progress(options.progress(), rows);
  const bool swap = (header.byte_order == '<') != host_is_little_endian();
  const std::size_t item = header.item_size;
  const auto truncated = [&](std::uint64_t at) {
    throw FileError(npy_load_where, name, 0, at,
                    "file ends inside the array data (truncated file?)");
  };

  const bool direct =
      !header.fortran_order && !swap && item == sizeof(T) &&
      ((std::is_same_v<T, float> && item == 4) || (std::is_same_v<T, double> && item == 8));
  if (direct) {
    // Rows in blocks of about 16 MiB, so progress can be reported on large tables.
    const std::size_t row_bytes = static_cast<std::size_t>(cols) * item;
    const Index block = std::max<Index>(1, static_cast<Index>((std::size_t{16} << 20) / row_bytes));
    for (Index r = 0; r < rows; r += block) {
      const Index n = std::min(block, rows - r);
      const std::size_t bytes = static_cast<std::size_t>(n) * row_bytes;
      if (source.read(m.data() + r * cols, bytes) != bytes) {
        truncated(header.data_offset + static_cast<std::uint64_t>(r) * row_bytes);
      }
      progress.rows_done(r + n);
    }
    return m;
  }

  // Element k of the file is (k / cols, k % cols) in C order, (k % rows, k / rows) in Fortran
  // order. Reads are about 1 MiB. In Fortran order a read holds whole columns when they fit, and
  // is transposed row by row so that writes go to consecutive addresses; only columns longer
  // than a read are scattered element by element.
  const auto total = static_cast<std::uint64_t>(rows) * static_cast<std::uint64_t>(cols);
  const std::size_t budget = (std::size_t{1} << 20) / item;
  const bool whole_columns = header.fortran_order && static_cast<std::uint64_t>(rows) <= budget;
  const std::size_t chunk_items =
      whole_columns ? budget / static_cast<std::size_t>(rows) * static_cast<std::size_t>(rows)
                    : budget;
  std::vector<unsigned char> staging(chunk_items * item);
  std::uint64_t done = 0;
  Index r = 0, c = 0;
  T* out = m.data();
  while (done < total) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_items, total - done));
    if (source.read(staging.data(), n * item) != n * item) {
      truncated(header.data_offset + done * item);
    }
    const unsigned char* p = staging.data();
    const auto convert = [&](auto tag) {
      constexpr std::size_t bytes = decltype(tag)::value;
      if (!header.fortran_order) {
        T* dst = out + done;
        for (std::size_t i = 0; i < n; ++i) {
          dst[i] = static_cast<T>(read_ieee<bytes>(p + i * bytes, swap));
        }
      } else if (whole_columns) {
        const auto nr = static_cast<std::size_t>(rows);
        const std::size_t block = n / nr;
        for (std::size_t i = 0; i < nr; ++i) {
          T* dst = out + static_cast<Index>(i) * cols + c;
          for (std::size_t j = 0; j < block; ++j) {
            dst[j] = static_cast<T>(read_ieee<bytes>(p + (j * nr + i) * bytes, swap));
          }
        }
        c += static_cast<Index>(block);
      } else {
        for (std::size_t i = 0; i < n; ++i) {
          out[r * cols + c] = static_cast<T>(read_ieee<bytes>(p + i * bytes, swap));
          if (++r == rows) r = 0, ++c;
        }
      }
    };
    if (item == 2) {
      convert(std::integral_constant<std::size_t, 2>{});
    } else if (item == 4) {
      convert(std::integral_constant<std::size_t, 4>{});
    } else {
      convert(std::integral_constant<std::size_t, 8>{});
    }
    done += n;
    progress.rows_done(
        done == total ? rows
                      : static_cast<Index>(static_cast<double>(done) / static_cast<double>(total) *
                                           static_cast<double>(rows)));
  }
  return m;
}

// The whole load from any source: the entry point shared by load_npy and the fuzzer.
template <class T>
Matrix<T> read_npy(ByteSource& source, const NpyLoadOptions& options = {}) {
  static_assert(std::is_floating_point_v<T>, "load_npy<T> needs a floating-point T");
  const NpyHeader header = read_npy_header(source);
  return read_npy_data<T>(source, header, options);
}

}  // namespace detail

// A 2-D float array from a .npy file (versions 1.0, 2.0, 3.0; '<f2', '<f4' or '<f8', also
// big-endian; C or Fortran order), converted to T. Bytes after the array are ignored (np.save
// can append several arrays to one file). Anything else throws emb::io::FileError, a
// std::runtime_error naming the file, the byte offset and what was expected there.
template <class T = float>
Matrix<T> load_npy(const std::string& path, const NpyLoadOptions& options) {
  detail::FileSource source(path, detail::npy_load_where);
  return detail::read_npy<T>(source, options);
}

template <class T = float>
Matrix<T> load_npy(const std::string& path) {
  return load_npy<T>(path, NpyLoadOptions());
}

// Just the header of a .npy file: shape, dtype and order, without reading the data.
inline NpyHeader read_npy_header(const std::string& path) {
  detail::FileSource source(path, detail::npy_load_where);
  return detail::read_npy_header(source);
}

// Writes `m` as a C-order .npy file of '<f4' (float), '<f8' (double) or '<f2' (emb::half),
// version 1.0 (2.0 only if the header would not fit), header padded so the data starts at a
// multiple of 64 bytes. The file appears at `path` only once completely written.
template <class T>
void save_npy(const std::string& path, const Eigen::Ref<const Matrix<T>>& m) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> ||
                    std::is_same_v<T, Eigen::half>,
                "save_npy writes float ('<f4'), double ('<f8') or half ('<f2') tables");
  static constexpr const char* where = "emb::io::save_npy";
  const char* descr = std::is_same_v<T, float> ? "<f4" : std::is_same_v<T, double> ? "<f8" : "<f2";
  std::string dict = emb::detail::concat("{'descr': '", descr,
                                         "', 'fortran_order': False, 'shape': (", m.rows(), ", ",
                                         m.cols(), "), }");
  int major = 1;
  std::size_t preamble = 10;
  std::size_t total = preamble + dict.size() + 1;
  std::size_t padded = (total + 63) / 64 * 64;
  if (padded - preamble > 0xffff) {
    major = 2;
    preamble = 12;
    total = preamble + dict.size() + 1;
    padded = (total + 63) / 64 * 64;
  }
  dict.append(padded - total, ' ');
  dict += '\n';
  const std::size_t header_len = dict.size();
  unsigned char head[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<unsigned char>(major), 0};
  for (std::size_t i = 0; i < preamble - 8; ++i) {
    head[8 + i] = static_cast<unsigned char>((header_len >> (8 * i)) & 0xff);
  }

  detail::AtomicWriter out(path, where);
  out.write(head, preamble);
  out.write(dict);
  detail::write_rows_little_endian(out, m.data(), m.rows(), m.cols(), m.outerStride());
  out.commit();
}

}  // namespace emb::io
