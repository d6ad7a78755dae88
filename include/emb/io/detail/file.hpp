// emb/io/detail/file.hpp — what every file loader shares: the byte sources it reads (a file,
// or bytes in memory for tests and fuzzers), a buffered scanner over them, and the
// write-then-rename used by the savers.
//
// Every loader parses through a ByteSource, so a fuzzer feeding bytes from memory runs exactly
// the code that reads files.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "../../detail/error.hpp"
#include "../../index_span.hpp"
#include "../file_error.hpp"
#include "parse.hpp"

namespace emb::io::detail {

// Up to `max` bytes of `bytes` as readable text for an error message: printable ASCII as is,
// anything else as \xNN, "..." when cut.
inline std::string printable(std::string_view bytes, std::size_t max = 32) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  const std::size_t n = std::min(bytes.size(), max);
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (bytes.size() > max) out += "...";
  return out;
}

// A sequential source of bytes whose total size is known before reading: the size bounds every
// allocation a loader makes, so a lying header cannot make it allocate more than the input
// could fill.
class ByteSource {
 public:
  ByteSource() = default;
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;
  virtual ~ByteSource() = default;

  // Name used in error messages (the path for a file).
  virtual const std::string& name() const = 0;
  virtual std::uint64_t size() const = 0;
  // Copies up to n bytes from the current position into dst and advances. Returns fewer than n
  // only at the end of the data; a read error throws.
  virtual std::size_t read(void* dst, std::size_t n) = 0;
  // Back to the first byte (a loader that must look at the data twice).
  virtual void rewind() = 0;
};

class MemorySource final : public ByteSource {
 public:
  MemorySource(const void* data, std::size_t size, std::string name = "<memory>")
      : data_(static_cast<const unsigned char*>(data)), size_(size), name_(std::move(name)) {}

  const std::string& name() const override { return name_; }
  std::uint64_t size() const override { return size_; }
  std::size_t read(void* dst, std::size_t n) override {
    const std::size_t k = std::min(n, size_ - pos_);
    if (k != 0) std::memcpy(dst, data_ + pos_, k);
    pos_ += k;
    return k;
  }
  void rewind() override { pos_ = 0; }

 private:
  const unsigned char* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
  std::string name_;
};

class FileSource final : public ByteSource {
 public:
  FileSource(const std::string& path, const char* where) : path_(path), where_(where) {
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (ec || !std::filesystem::exists(status)) fail("cannot open: no such file");
    if (std::filesystem::is_directory(status)) fail("cannot open: it is a directory");
    if (!std::filesystem::is_regular_file(status)) fail("cannot open: not a regular file");
    size_ = std::filesystem::file_size(path, ec);
    if (ec) fail("cannot read its size: " + ec.message());
    file_.reset(std::fopen(path.c_str(), "rb"));
    if (!file_) fail(std::string("cannot open: ") + std::strerror(errno));
    // Unbuffered: the scanner reads large blocks itself, and a bulk read then goes from the
    // kernel straight into the destination (the matrix, for .npy) with no stdio copy between.
    std::setvbuf(file_.get(), nullptr, _IONBF, 0);
  }

  const std::string& name() const override { return path_; }
  std::uint64_t size() const override { return size_; }
  std::size_t read(void* dst, std::size_t n) override {
    const std::size_t k = std::fread(dst, 1, n, file_.get());
    if (k < n && std::ferror(file_.get())) {
      throw FileError(where_, path_, 0, pos_ + k, "read error");
    }
    pos_ += k;
    return k;
  }
  void rewind() override {
    std::rewind(file_.get());
    pos_ = 0;
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const {
    throw FileError(where_, path_, 0, FileError::no_offset, problem);
  }
  struct Closer {
    void operator()(std::FILE* f) const noexcept { std::fclose(f); }
  };

  std::string path_;
  const char* where_;
  std::uint64_t size_ = 0;
  std::uint64_t pos_ = 0;
  std::unique_ptr<std::FILE, Closer> file_;
};

// Reads a ByteSource through one reusable buffer: lines for text formats, exact byte counts
// for binary ones. Only the current line (or token) has to fit; the buffer grows for a longer
// one, so memory stays at one chunk plus the longest line, never the whole file.
class Scanner {
 public:
  explicit Scanner(ByteSource& source, std::size_t chunk = std::size_t{1} << 20)
      : source_(source),
        buffer_(static_cast<std::size_t>(
            std::clamp<std::uint64_t>(source.size() + 1, 1, std::max<std::size_t>(chunk, 1)))) {}

  ByteSource& source() { return source_; }
  // Offset in the file of the next unread byte.
  std::uint64_t offset() const { return base_ + pos_; }
  // Lines returned so far (the 1-based number of the last one).
  std::uint64_t line_number() const { return line_; }
  bool at_end() { return !ensure(1); }

  // The next line without its '\n' (a '\r' before it stays: callers strip it), or nullopt at the
  // end of the data. `start` receives the offset of its first byte.
  std::optional<std::string_view> next_line(std::uint64_t& start) {
    std::size_t searched = 0;
    for (;;) {
      const char* begin = buffer_.data() + pos_;
      const std::size_t avail = end_ - pos_;
      if (const void* nl = std::memchr(begin + searched, '\n', avail - searched)) {
        const auto len = static_cast<std::size_t>(static_cast<const char*>(nl) - begin);
        start = offset();
        pos_ += len + 1;
        ++line_;
        return std::string_view(begin, len);
      }
      searched = avail;
      if (!refill(avail + 1)) {
        if (avail == 0) return std::nullopt;
        start = offset();
        pos_ = end_;
        ++line_;
        return std::string_view(buffer_.data() + end_ - avail, avail);
      }
    }
  }

  // The next byte without consuming it, or -1 at the end.
  int peek() {
    if (!ensure(1)) return -1;
    return static_cast<unsigned char>(buffer_[pos_]);
  }
  void skip(std::size_t n) { pos_ += std::min(n, end_ - pos_); }

  // Up to n bytes (fewer only at the end of the data) as a view valid until the next call.
  std::string_view view(std::size_t n) {
    ensure(n);
    return std::string_view(buffer_.data() + pos_, std::min(n, end_ - pos_));
  }

  // Bytes up to (not including) `delim`, which is consumed; nullopt when the data ends or `max`
  // bytes pass first (nothing is consumed then, so offset() points at the token).
  std::optional<std::string_view> read_until(char delim, std::size_t max) {
    std::size_t searched = 0;
    for (;;) {
      const char* begin = buffer_.data() + pos_;
      const std::size_t avail = end_ - pos_;
      const std::size_t limit = std::min(avail, max + 1);
      if (const void* hit = std::memchr(begin + searched, delim, limit - searched)) {
        const auto len = static_cast<std::size_t>(static_cast<const char*>(hit) - begin);
        pos_ += len + 1;
        return std::string_view(begin, len);
      }
      if (limit > max) return std::nullopt;
      searched = limit;
      if (!refill(avail + 1)) return std::nullopt;
    }
  }

  // Copies exactly n bytes into dst; false (with the available bytes consumed) if the data ends
  // first. Large reads go straight from the source into dst.
  bool read_exact(void* dst, std::size_t n) {
    if (n == 0) return true;  // dst may be null then (a table with no columns)
    auto* out = static_cast<unsigned char*>(dst);
    const std::size_t buffered = std::min(n, end_ - pos_);
    std::memcpy(out, buffer_.data() + pos_, buffered);
    pos_ += buffered;
    if (buffered == n) return true;
    out += buffered;
    const std::size_t rest = n - buffered;
    if (rest >= buffer_.size() / 2) {
      base_ += end_;  // the buffer is used up: restart it empty after the bytes read directly
      pos_ = end_ = 0;
      const std::size_t got = source_.read(out, rest);
      base_ += got;
      if (got < rest) eof_ = true;
      return got == rest;
    }
    if (!ensure(rest)) {
      pos_ = end_;
      return false;
    }
    std::memcpy(out, buffer_.data() + pos_, rest);
    pos_ += rest;
    return true;
  }

  void rewind() {
    source_.rewind();
    base_ = 0;
    pos_ = end_ = 0;
    eof_ = false;
    line_ = 0;
  }

 private:
  // Makes at least n unread bytes available if the data has them.
  bool ensure(std::size_t n) {
    while (end_ - pos_ < n) {
      if (!refill(n)) return false;
    }
    return true;
  }

  // Moves the unread bytes to the front, grows the buffer if `want` unread bytes would not fit,
  // and reads more. False when nothing more could be read.
  bool refill(std::size_t want) {
    if (eof_) return false;
    const std::size_t unread = end_ - pos_;
    if (pos_ != 0) {
      std::memmove(buffer_.data(), buffer_.data() + pos_, unread);
      base_ += pos_;
      pos_ = 0;
      end_ = unread;
    }
    if (want > buffer_.size() || end_ == buffer_.size()) {
      // Never past what the source still holds: a growing line is bounded by the file.
      const std::uint64_t left = source_.size() > base_ + end_ ? source_.size() - base_ - end_ : 0;
      const std::size_t grown = std::max(want, buffer_.size() * 2);
      const std::uint64_t cap = static_cast<std::uint64_t>(end_) + std::max<std::uint64_t>(left, 1);
      buffer_.resize(static_cast<std::size_t>(std::min<std::uint64_t>(grown, cap)));
    }
    const std::size_t got = source_.read(buffer_.data() + end_, buffer_.size() - end_);
    end_ += got;
    if (got == 0) eof_ = true;
    return got != 0;
  }

  ByteSource& source_;
  std::vector<char> buffer_;
  std::uint64_t base_ = 0;  // file offset of buffer_[0]
  std::size_t pos_ = 0;
  std::size_t end_ = 0;
  bool eof_ = false;
  std::uint64_t line_ = 0;
};

// Writes a file under a temporary name and renames it into place only when everything was
// written, so a save that fails leaves no half-written file at `path`.
class AtomicWriter {
 public:
  AtomicWriter(const std::string& path, const char* where)
      : path_(path), temp_(path + ".emb-partial"), where_(where) {
    file_ = std::fopen(temp_.c_str(), "wb");
    if (!file_) {
      throw FileError(where_, path_, 0, FileError::no_offset,
                      std::string("cannot open for writing: ") + std::strerror(errno));
    }
  }
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;
  ~AtomicWriter() {
    if (file_) {
      std::fclose(file_);
      std::remove(temp_.c_str());
    }
  }

  void write(const void* data, std::size_t n) {
    if (n != 0 && std::fwrite(data, 1, n, file_) != n) fail("write error");
    written_ += n;
  }
  void write(std::string_view s) { write(s.data(), s.size()); }

  void commit() {
    std::FILE* f = std::exchange(file_, nullptr);
    if (std::fclose(f) != 0) {
      std::remove(temp_.c_str());
      fail("write error while closing");
    }
    std::error_code ec;
    std::filesystem::rename(temp_, path_, ec);
    if (ec) {
      std::remove(temp_.c_str());
      fail("cannot move the written file into place: " + ec.message());
    }
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const {
    throw FileError(where_, path_, 0, written_, problem);
  }

  std::string path_;
  std::string temp_;
  const char* where_;
  std::FILE* file_ = nullptr;
  std::uint64_t written_ = 0;
};

// Writes `rows` rows of `cols` values of T, row r starting at data + r * stride, as little-endian
// bytes (swapped on a big-endian host): the data of .npy and safetensors files.
template <class T>
void write_rows_little_endian(AtomicWriter& out, const T* data, Index rows, Index cols,
                              Index stride) {
  const bool swap = !host_is_little_endian();
  const std::size_t row_bytes = static_cast<std::size_t>(cols) * sizeof(T);
  std::vector<unsigned char> row(swap ? row_bytes : 0);
  for (Index r = 0; r < rows; ++r) {
    const T* src = data + r * stride;
    if (!swap) {
      out.write(src, row_bytes);
    } else {
      std::memcpy(row.data(), src, row_bytes);
      for (std::size_t i = 0; i < row_bytes; i += sizeof(T)) {
        reverse_bytes(row.data() + i, sizeof(T));
      }
      out.write(row.data(), row_bytes);
    }
  }
}

// Calls the progress callback every `step` rows and at the end.
class ProgressReporter {
 public:
  ProgressReporter(const Progress& progress, Index total)
      : progress_(progress), total_(total), step_(std::max<Index>(1, total / 100)) {}
  void rows_done(Index done) {
    if (progress_ && total_ > 0 && (done >= next_ || done == total_)) {
      next_ = done + step_;
      progress_(done, total_);
    }
  }

 private:
  const Progress& progress_;
  Index total_;
  Index step_;
  Index next_ = 0;
};

}  // namespace emb::io::detail
