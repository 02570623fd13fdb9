// int32 lanes (already inside [-128, 127]) to 16 int8 at y, under mask m. Compilers fuse the
// conversion and the store into vpmovdb with a memory operand, which AMD Zen 4/5 run as a slow
// microcoded sequence (most of the runtime's depthwise row time went there); the empty asm keeps
// the conversion in a register, and the store is a plain (masked) vmovdqu8. Shared by the kernel
// tier's and the runtime's AVX-512 int8 files; included inside their namespace (immintrin.h
// first).
// (no includes: this file is included inside a namespace)
inline void store_s8(int8_t* y, __mmask16 m, __m512i v) {
  __m128i b = _mm512_cvtepi32_epi8(v);
  __asm__("" : "+v"(b));
  _mm_mask_storeu_epi8(y, m, b);
}
