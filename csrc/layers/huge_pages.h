// An allocator for large, long-lived weight buffers: blocks of 2 MB or more start on a 2 MB
// boundary and are marked MADV_HUGEPAGE before anything touches them, so the kernel backs them
// with huge pages where transparent huge pages are in "madvise" mode (the common default). A
// layer whose weights are read once per call (a GEMV: an FC layer at batch 1, 4-6 MB of fp32)
// streams them with a fraction of the page walks. numpy asks the same for its large arrays, and
// without it our GEMV trailed numpy's on the large FC layers (docs/kernels.md).
// Smaller blocks, and systems without madvise, get plain aligned memory.
//
// Consumes: element counts. Produces: memory for std::vector<T, HugePageAllocator<T>>.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace ep {

template <class T>
struct HugePageAllocator {
  using value_type = T;
  static constexpr size_t kHuge = size_t(2) << 20;
  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) {}
  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    const size_t align = bytes >= kHuge ? kHuge : 64;
    // a whole number of alignments, one at least (aligned_alloc may return null for 0 bytes)
    void* p =
        std::aligned_alloc(align, bytes > align ? (bytes + align - 1) / align * align : align);
    if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (align == kHuge) madvise(p, (bytes + kHuge - 1) / kHuge * kHuge, MADV_HUGEPAGE);  // a hint
#endif
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <class U>
  bool operator==(const HugePageAllocator<U>&) const {
    return true;
  }
  template <class U>
  bool operator!=(const HugePageAllocator<U>&) const {
    return false;
  }
};

}  // namespace ep
