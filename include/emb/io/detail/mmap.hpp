// emb/io/detail/mmap.hpp — what the mapped-file readers share: a file opened read-only and
// checked to be a regular file, a ByteSource over it (the .npy header reader takes one), and one
// mmap of a byte range of it that unmaps itself.
//
// POSIX only (Linux, the BSDs, macOS). Elsewhere `mapping_supported` is false and opening a
// file for mapping throws a FileError that points to the loaders.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "../file_error.hpp"
#include "file.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define EMB_IO_HAVE_MMAP 1
#else
#define EMB_IO_HAVE_MMAP 0
#endif

namespace emb::io::detail {

inline constexpr bool mapping_supported = EMB_IO_HAVE_MMAP != 0;

inline std::size_t page_size() noexcept {
#if EMB_IO_HAVE_MMAP
  static const std::size_t size = [] {
    const long p = ::sysconf(_SC_PAGESIZE);
    return p > 0 ? static_cast<std::size_t>(p) : std::size_t{4096};
  }();
  return size;
#else
  return 4096;
#endif
}

// A file descriptor that closes itself.
class FileHandle {
 public:
  FileHandle() = default;
  explicit FileHandle(int fd) noexcept : fd_(fd) {}
  FileHandle(FileHandle&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  FileHandle& operator=(FileHandle&& other) noexcept {
    if (this != &other) {
      close();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  FileHandle(const FileHandle&) = delete;
  FileHandle& operator=(const FileHandle&) = delete;
  ~FileHandle() { close(); }

  int get() const noexcept { return fd_; }

 private:
  void close() noexcept {
#if EMB_IO_HAVE_MMAP
    if (fd_ >= 0) ::close(fd_);
#endif
    fd_ = -1;
  }
  int fd_ = -1;
};

struct OpenedFile {
  FileHandle handle;
  std::uint64_t size = 0;
};

// Opens `path` read-only — in every mode: a mapping made from it can never write the file — and
// checks on the open descriptor (not the name, which could be replaced meanwhile) that it is a
// regular file.
inline OpenedFile open_for_mapping(const std::string& path, const char* where) {
  const auto fail = [&](const std::string& problem) {
    throw FileError(where, path, 0, FileError::no_offset, problem);
  };
#if EMB_IO_HAVE_MMAP
  int flags = O_RDONLY;
#ifdef O_CLOEXEC
  flags |= O_CLOEXEC;
#endif
  const int fd = ::open(path.c_str(), flags);
  if (fd < 0) {
    const int e = errno;
    fail(e == ENOENT ? std::string("cannot open: no such file")
                     : std::string("cannot open: ") + std::strerror(e));
  }
  OpenedFile file{FileHandle(fd), 0};
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(std::string("cannot read its size: ") + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) fail("cannot open: it is a directory");
  if (!S_ISREG(st.st_mode)) fail("cannot map: not a regular file");
  file.size = static_cast<std::uint64_t>(st.st_size);
  return file;
#else
  fail("memory mapping needs a POSIX system (mmap); read the file with its loader instead");
#endif
}

// Sequential reads of an open file with pread, so that a header is parsed from the same file
// that is then mapped.
class DescriptorSource final : public ByteSource {
 public:
  DescriptorSource(int fd, std::uint64_t size, std::string name, const char* where)
      : fd_(fd), size_(size), name_(std::move(name)), where_(where) {}

  const std::string& name() const override { return name_; }
  std::uint64_t size() const override { return size_; }
  std::size_t read(void* dst, std::size_t n) override {
    auto* out = static_cast<unsigned char*>(dst);
    std::size_t done = 0;
#if EMB_IO_HAVE_MMAP
    while (done < n && pos_ < size_) {
      const std::size_t want =
          static_cast<std::size_t>(std::min<std::uint64_t>(n - done, std::uint64_t{1} << 30));
      const ssize_t got = ::pread(fd_, out + done, want, static_cast<off_t>(pos_));
      if (got < 0) {
        if (errno == EINTR) continue;
        throw FileError(where_, name_, 0, pos_, std::string("read error: ") + std::strerror(errno));
      }
      if (got == 0) break;
      done += static_cast<std::size_t>(got);
      pos_ += static_cast<std::uint64_t>(got);
    }
#else
    (void)out;
#endif
    return done;
  }
  void rewind() override { pos_ = 0; }
  // Reads continue from byte `pos`.
  void seek(std::uint64_t pos) noexcept { pos_ = pos; }

 private:
  int fd_;
  std::uint64_t size_;
  std::string name_;
  const char* where_;
  std::uint64_t pos_ = 0;
};

// One mmap of the bytes [offset, offset + length) of a file, from the page boundary at or below
// `offset` (mmap needs page-aligned file offsets). Read-only and shared, or private and
// writable (copy-on-write). Unmapped when destroyed. An empty range maps nothing.
class Mapping {
 public:
  Mapping() = default;
  Mapping(Mapping&& other) noexcept
      : base_(std::exchange(other.base_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        lead_(std::exchange(other.lead_, 0)) {}
  Mapping& operator=(Mapping&& other) noexcept {
    if (this != &other) {
      unmap();
      base_ = std::exchange(other.base_, nullptr);
      size_ = std::exchange(other.size_, 0);
      lead_ = std::exchange(other.lead_, 0);
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { unmap(); }

  static Mapping map(int fd, std::uint64_t offset, std::uint64_t length, bool private_writable,
                     const std::string& path, const char* where) {
    Mapping m;
    if (length == 0) return m;
#if EMB_IO_HAVE_MMAP
    const std::uint64_t page = page_size();
    const std::uint64_t start = offset / page * page;
    const std::uint64_t lead = offset - start;
    if (length > std::numeric_limits<std::size_t>::max() - lead ||
        start > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max())) {
      throw FileError(where, path, 0, offset,
                      emb::detail::concat("cannot map ", length,
                                          " bytes: more than this system's address space"));
    }
    const auto bytes = static_cast<std::size_t>(lead + length);
    const int prot = private_writable ? (PROT_READ | PROT_WRITE) : PROT_READ;
    const int flags = private_writable ? MAP_PRIVATE : MAP_SHARED;
    void* p = ::mmap(nullptr, bytes, prot, flags, fd, static_cast<off_t>(start));
    if (p == MAP_FAILED) {
      throw FileError(where, path, 0, offset,
                      emb::detail::concat("cannot map ", length, " bytes: ", std::strerror(errno)));
    }
    m.base_ = p;
    m.size_ = bytes;
    m.lead_ = static_cast<std::size_t>(lead);
    return m;
#else
    (void)fd, (void)offset, (void)private_writable;
    throw FileError(where, path, 0, offset, "memory mapping needs a POSIX system (mmap)");
#endif
  }

  // The first byte of the range asked for (nullptr for an empty range).
  unsigned char* data() const noexcept {
    return base_ ? static_cast<unsigned char*>(base_) + lead_ : nullptr;
  }
  // The whole mapping, from its page-aligned start.
  void* base() const noexcept { return base_; }
  std::size_t size() const noexcept { return size_; }

 private:
  void unmap() noexcept {
#if EMB_IO_HAVE_MMAP
    if (base_) ::munmap(base_, size_);
#endif
    base_ = nullptr;
    size_ = 0;
    lead_ = 0;
  }

  void* base_ = nullptr;
  std::size_t size_ = 0;
  std::size_t lead_ = 0;  // bytes from base_ to the range asked for
};

// madvise over a mapping; false where the call is not available or the kernel refused it.
inline bool advise(const Mapping& m, int advice) noexcept {
#if EMB_IO_HAVE_MMAP
  if (m.base() == nullptr) return false;
  return ::posix_madvise(m.base(), m.size(), advice) == 0;
#else
  (void)m, (void)advice;
  return false;
#endif
}

// Makes the pages of [data, data + bytes) (inside mapping `m`) resident and mapped, in blocks of
// about 8 MiB, calling `done(bytes_done)` after each. Linux 5.14+ populates a block with one
// madvise(MADV_POPULATE_READ), which also reports a file shortened under the mapping as an
// error instead of a SIGBUS; elsewhere one byte per page is read.
template <class Done>
void populate(const Mapping& m, const unsigned char* data, std::size_t bytes,
              const std::string& path, const char* where, Done&& done) {
#if EMB_IO_HAVE_MMAP
  if (bytes == 0) return;
  const std::size_t page = page_size();
  const auto* base = static_cast<const unsigned char*>(m.base());
  const std::size_t lead = static_cast<std::size_t>(data - base);
  const std::size_t block = std::size_t{8} << 20;  // a multiple of every page size in use
  const std::size_t end = lead + bytes;
#ifdef MADV_POPULATE_READ
  bool use_madvise = true;
#endif
  for (std::size_t at = lead / page * page; at < end;) {
    const std::size_t stop = std::min(end, (at / block + 1) * block);
    bool populated = false;
#ifdef MADV_POPULATE_READ
    if (use_madvise) {
      const std::size_t span = (stop - at + page - 1) / page * page;
      if (::madvise(const_cast<unsigned char*>(base) + at, span, MADV_POPULATE_READ) == 0) {
        populated = true;
      } else if (errno == EINVAL || errno == ENOSYS) {
        use_madvise = false;  // an older kernel: read the pages instead
      } else if (errno == EFAULT) {
        throw FileError(where, path, 0, FileError::no_offset,
                        "the file is shorter than when it was mapped (truncated meanwhile?)");
      } else if (errno != EINTR && errno != EAGAIN) {
        throw FileError(where, path, 0, FileError::no_offset,
                        std::string("cannot read the mapped pages: ") + std::strerror(errno));
      } else {
        continue;  // interrupted: try the same block again
      }
    }
#endif
    if (!populated) {
      // Volatile reads: the compiler must perform each one, and the page is faulted in.
      for (std::size_t p = at; p < stop; p += page) {
        (void)*static_cast<const volatile unsigned char*>(base + p);
      }
    }
    at = stop;
    done(std::min(at, end) - lead);
  }
#else
  (void)m, (void)data, (void)bytes, (void)path, (void)where, (void)done;
#endif
}

}  // namespace emb::io::detail
