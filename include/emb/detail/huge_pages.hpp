// emb/detail/huge_pages.hpp — asking Linux for 2 MiB pages under a large buffer.
//
// A table of hundreds of MiB read at random rows misses the TLB on nearly every row with 4 KiB
// pages; with 2 MiB pages the page walk mostly disappears. Transparent huge pages in the
// kernel's "madvise" mode (Debian's default) back only regions marked MADV_HUGEPAGE, and only
// at the first write of each 2 MiB-aligned extent, so the advice must come before the buffer is
// written. Elsewhere (not Linux, no THP) every function here reports that nothing was done.
#pragma once

#include <cstddef>
#include <cstdint>

#ifdef __linux__
#include <sys/mman.h>

#include <fstream>
#include <sstream>
#include <string>
#endif

namespace emb::detail {

inline constexpr std::size_t huge_page_size = std::size_t{2} << 20;

// Buffers smaller than this hold at most one whole 2 MiB extent: not worth the advice.
inline constexpr std::size_t huge_page_min_bytes = std::size_t{2} * huge_page_size;

// Marks the 2 MiB-aligned interior of [p, p + bytes) MADV_HUGEPAGE. Returns whether the kernel
// accepted the advice for a non-empty interior.
inline bool advise_huge_pages(void* p, std::size_t bytes) noexcept {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p == nullptr || bytes < huge_page_min_bytes) return false;
  const auto begin = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t first = (begin + huge_page_size - 1) & ~(huge_page_size - 1);
  const std::uintptr_t last = (begin + bytes) & ~(huge_page_size - 1);
  if (last <= first) return false;
  return madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE) == 0;
#else
  (void)p;
  (void)bytes;
  return false;
#endif
}

// Whether the kernel offers transparent huge pages to advised regions ("always" or "madvise").
inline bool huge_pages_available() {
#ifdef __linux__
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  if (!std::getline(in, line)) return false;
  return line.find("[always]") != std::string::npos ||
         line.find("[madvise]") != std::string::npos;
#else
  return false;
#endif
}

// Bytes of [p, p + bytes) backed by huge pages, from the AnonHugePages lines of
// /proc/self/smaps for the mappings that overlap the range (a mapping is counted whole, so the
// figure can include neighbours sharing the mapping). 0 where smaps does not exist.
inline std::size_t huge_page_bytes(const void* p, std::size_t bytes) {
#ifdef __linux__
  std::ifstream in("/proc/self/smaps");
  const auto begin = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t end = begin + bytes;
  std::size_t total = 0;
  bool overlaps = false;
  std::string line;
  while (std::getline(in, line)) {
    const auto dash = line.find('-');
    const auto space = line.find(' ');
    // A mapping header: "start-end perms offset dev inode path", both bounds in hex.
    if (dash != std::string::npos && space != std::string::npos && dash < space &&
        line.find(':') > space) {
      std::uintptr_t lo = 0;
      std::uintptr_t hi = 0;
      std::istringstream(line.substr(0, dash)) >> std::hex >> lo;
      std::istringstream(line.substr(dash + 1, space - dash - 1)) >> std::hex >> hi;
      overlaps = lo < end && begin < hi;
      continue;
    }
    if (overlaps && line.rfind("AnonHugePages:", 0) == 0) {
      std::size_t kib = 0;
      std::istringstream(line.substr(14)) >> kib;
      total += kib << 10;
    }
  }
  return total;
#else
  (void)p;
  (void)bytes;
  return 0;
#endif
}

}  // namespace emb::detail
