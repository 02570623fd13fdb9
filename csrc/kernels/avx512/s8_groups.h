// The sums of one group of 16 channels in the one-column form (kernels.h pack_sparse_s8_groups),
// added to `acc`: per window of 32 quads, the column's bytes in two registers (bytes past K
// loaded as 0, which meet zero weights; made unsigned by ^ 0x80 for vpdpbusd, so each sum gains
// 128 * (sum of the channel's weights), which the caller removes), then per slot one permute by
// the slot's byte indices and one vpdpbusd. Two accumulators alternate slots, since each
// vpdpbusd waits on its accumulator's last. Moves the slot, index and weight cursors past the
// group. Shared by the kernel tier and the runtime; included inside their namespace (immintrin.h
// first).
// (no includes: this file is included inside a namespace)
inline __m512i s8_group_sums(const int8_t* x, int64_t k, int64_t windows, const int32_t*& slots,
                             const uint8_t*& quad, const int32_t*& w, __m512i acc) {
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  const auto bytes = [](int64_t n) {
    return n >= 64 ? ~__mmask64(0) : n <= 0 ? __mmask64(0) : (__mmask64(1) << n) - 1;
  };
  const auto index = [](const uint8_t* q) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
  };
  __m512i acc1 = _mm512_setzero_si512();
  for (int64_t v = 0; v < windows; ++v) {
    const int32_t count = *slots++;
    if (!count) continue;
    const int8_t* xv = x + v * 128;
    const __m512i t0 = _mm512_xor_si512(_mm512_maskz_loadu_epi8(bytes(k - v * 128), xv), flip);
    const __m512i t1 =
        _mm512_xor_si512(_mm512_maskz_loadu_epi8(bytes(k - v * 128 - 64), xv + 64), flip);
    int32_t j = 0;
    for (; j + 2 <= count; j += 2, quad += 32, w += 32) {
      const __m512i x0 = _mm512_permutex2var_epi32(t0, index(quad), t1);
      const __m512i x1 = _mm512_permutex2var_epi32(t0, index(quad + 16), t1);
      acc = _mm512_dpbusd_epi32(acc, x0, _mm512_loadu_si512(w));
      acc1 = _mm512_dpbusd_epi32(acc1, x1, _mm512_loadu_si512(w + 16));
    }
    if (j < count) {
      acc = _mm512_dpbusd_epi32(acc, _mm512_permutex2var_epi32(t0, index(quad), t1),
                                _mm512_loadu_si512(w));
      quad += 16, w += 16;
    }
  }
  return _mm512_add_epi32(acc, acc1);
}
