// emb/io/file_error.hpp — what the file loaders report: FileError, thrown for a file that cannot
// be read or does not hold what it should, and Progress, the callback a long load reports to.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

#include "../detail/error.hpp"
#include "../index_span.hpp"

namespace emb::io {

// Thrown for a file that cannot be read or does not hold what it should. what() names the
// function, the file, the place (line and/or byte offset, when there is one) and what was
// expected there; the same facts are available as fields.
class FileError : public std::runtime_error {
 public:
  static constexpr std::uint64_t no_offset = std::numeric_limits<std::uint64_t>::max();

  FileError(const std::string& where, std::string path, std::uint64_t line, std::uint64_t offset,
            const std::string& problem)
      : std::runtime_error(format(where, path, line, offset, problem)),
        path_(std::move(path)),
        line_(line),
        offset_(offset) {}

  const std::string& path() const noexcept { return path_; }
  // 1-based line of a text file; 0 when the place is not a line (binary data, a header field).
  std::uint64_t line() const noexcept { return line_; }
  // Byte offset from the start of the file, or no_offset when the file could not be opened.
  std::uint64_t offset() const noexcept { return offset_; }

 private:
  static std::string format(const std::string& where, const std::string& path, std::uint64_t line,
                            std::uint64_t offset, const std::string& problem) {
    std::string place;
    if (line != 0) place = emb::detail::concat(", line ", line);
    if (offset != no_offset)
      place += emb::detail::concat(line != 0 ? " (byte " : ", byte ", offset, line != 0 ? ")" : "");
    return emb::detail::concat(where, ": '", path, "'", place, ": ", problem);
  }

  std::string path_;
  std::uint64_t line_;
  std::uint64_t offset_;
};

// Called while a table loads with (rows read so far, total rows); the last call has
// done == total. Not called for an empty table.
using Progress = std::function<void(Index done, Index total)>;

}  // namespace emb::io
