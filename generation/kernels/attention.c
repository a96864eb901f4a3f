/* One decoding step's attention over a KV cache held in bf16 or in int8, for the
 * generation worker (generation/attention.py loads this through ctypes).
 *
 * PyTorch's CPU attention reads a bf16 cache 4-6 times slower than a float32 one on CPUs
 * without AMX (an AMD EPYC, AVX2 only): its kernels widen bf16 one element at a time. A
 * decoding step's attention is a read of the whole cache, so the bytes read set its cost;
 * this kernel reads half a float32 cache's bytes and widens bf16 in registers (a bf16
 * number is the top half of a float32: a shift or a mask).
 *
 * Layouts (bf16 as uint16), capacity a multiple of 16:
 *   keys   [rows][heads][capacity / 16][dim / 2][16][2]: a tile of 16 positions, two
 *          dimensions a 32-bit lane, so 16 positions' scores build up in one register
 *          without a horizontal sum per position;
 *   values [rows][heads][capacity / 2][dim][2]: two positions a 32-bit lane.
 * Row r attends to positions start[r] .. length - 1 (left padding before start[r]).
 * query and out: float32 [rows][heads][dim]. dim must be a multiple of 16.
 *
 * The int8 cache (``int8-kv8``) reads half the bf16 cache's bytes again: once the bf16
 * kernel runs as fast as the memory delivers (it does on an AMD EPYC, 31 GB/s a core),
 * fewer bytes is the only lever left. A key or value vector of a position and head is held
 * as int8 with one float32 scale (its largest magnitude / 127, rounded to nearest even):
 *   keys   [rows][heads][capacity / 16][dim][16]: a tile of 16 positions, one dimension
 *          16 bytes, widened to 16 floats by one sign extension and one conversion;
 *   values [rows][heads][capacity][dim];
 *   key_scales, value_scales [rows][heads][capacity].
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define LANES 16
typedef __m512 vf;
typedef __m512i vi;
#define vf_zero() _mm512_setzero_ps()
#define vf_set1(x) _mm512_set1_ps(x)
#define vf_fma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define vf_mul(a, b) _mm512_mul_ps(a, b)
#define vf_sub(a, b) _mm512_sub_ps(a, b)
#define vf_add(a, b) _mm512_add_ps(a, b)
#define vf_max(a, b) _mm512_max_ps(a, b)
#define vf_min(a, b) _mm512_min_ps(a, b)
#define vf_load(p) _mm512_loadu_ps(p)
#define vf_store(p, x) _mm512_storeu_ps(p, x)
#define vf_round(x) _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define vi_load(p) _mm512_loadu_si512((const void *)(p))
#define vi_lo(x) _mm512_castsi512_ps(_mm512_slli_epi32(x, 16))
#define vi_hi(x) _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32((int)0xFFFF0000u)))
#define vf_to_vi(x) _mm512_cvtps_epi32(x)
#define vf_from_i8(p) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p))))
#define vi_exp2(n) _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n, _mm512_set1_epi32(127)), 23))
static inline float vf_hmax(vf x) { return _mm512_reduce_max_ps(x); }
static inline float vf_hsum(vf x) { return _mm512_reduce_add_ps(x); }
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LANES 8
typedef __m256 vf;
typedef __m256i vi;
#define vf_zero() _mm256_setzero_ps()
#define vf_set1(x) _mm256_set1_ps(x)
#define vf_fma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define vf_mul(a, b) _mm256_mul_ps(a, b)
#define vf_sub(a, b) _mm256_sub_ps(a, b)
#define vf_add(a, b) _mm256_add_ps(a, b)
#define vf_max(a, b) _mm256_max_ps(a, b)
#define vf_min(a, b) _mm256_min_ps(a, b)
#define vf_load(p) _mm256_loadu_ps(p)
#define vf_store(p, x) _mm256_storeu_ps(p, x)
#define vf_round(x) _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define vi_load(p) _mm256_loadu_si256((const __m256i *)(p))
#define vi_lo(x) _mm256_castsi256_ps(_mm256_slli_epi32(x, 16))
#define vi_hi(x) _mm256_castsi256_ps(_mm256_and_si256(x, _mm256_set1_epi32((int)0xFFFF0000u)))
#define vf_to_vi(x) _mm256_cvtps_epi32(x)
#define vf_from_i8(p) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p))))
#define vi_exp2(n) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23))
static inline float vf_hmax(vf x) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}
static inline float vf_hsum(vf x) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
#else
#define LANES 0
#endif

/* float32 to bf16, rounded to nearest even (NaN kept a NaN), as PyTorch rounds. */
static inline uint16_t bf16_round(float x) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);
    bits += 0x7fffu + ((bits >> 16) & 1);
    return (uint16_t)(bits >> 16);
}

/* Writes one position's keys and values (float32; key element [r][h][d] at
 * r * key_strides[0] + h * key_strides[1] + d, values likewise) into the cache's layouts at
 * position ``at``. PyTorch's strided copy with the conversion took 0.34 ms a layer at 128
 * rows, a twentieth of a step. */
void cache_write(const float *key, const float *value, const long *key_strides,
                 const long *value_strides, int rows, int heads, int dim, int capacity, int at,
                 uint16_t *keys, uint16_t *values) {
    const size_t head = (size_t)capacity * dim;
    const int tile = at / 16, lane = at % 16, pair = at / 2, side = at % 2;
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < heads; h++) {
            const float *k = key + r * key_strides[0] + h * key_strides[1];
            const float *v = value + r * value_strides[0] + h * value_strides[1];
            uint16_t *kt = keys + ((size_t)r * heads + h) * head + (size_t)tile * dim * 16;
            uint16_t *vp = values + ((size_t)r * heads + h) * head + (size_t)pair * dim * 2;
            for (int d = 0; d < dim; d++) {
                kt[(d / 2) * 32 + lane * 2 + d % 2] = bf16_round(k[d]);
                vp[d * 2 + side] = bf16_round(v[d]);
            }
        }
}

/* A vector's int8 quantisation: scale = its largest magnitude / 127; each element
 * divided by it and rounded to nearest even, as PyTorch's ``round`` (all 0 where the
 * vector is). */
static inline float i8_quantize(const float *x, int n, int stride, int8_t *out) {
    float top = 0.0f;
    for (int d = 0; d < n; d++) top = fmaxf(top, fabsf(x[d]));
    const float scale = top / 127.0f;
    for (int d = 0; d < n; d++) {
        float q = scale > 0.0f ? nearbyintf(x[d] / scale) : 0.0f;
        out[(size_t)d * stride] = (int8_t)fmaxf(-127.0f, fminf(127.0f, q));
    }
    return scale;
}

/* ``cache_write`` for the int8 cache: one position's keys and values, quantised. */
void cache_write_i8(const float *key, const float *value, const long *key_strides,
                    const long *value_strides, int rows, int heads, int dim, int capacity,
                    int at, int8_t *keys, int8_t *values, float *key_scales,
                    float *value_scales) {
    const size_t head = (size_t)capacity * dim;
    const int tile = at / 16, lane = at % 16;
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < heads; h++) {
            const size_t rh = (size_t)r * heads + h;
            const float *k = key + r * key_strides[0] + h * key_strides[1];
            const float *v = value + r * value_strides[0] + h * value_strides[1];
            int8_t *kt = keys + rh * head + (size_t)tile * dim * 16 + lane;
            key_scales[rh * capacity + at] = i8_quantize(k, dim, 16, kt);
            value_scales[rh * capacity + at] =
                i8_quantize(v, dim, 1, values + rh * head + (size_t)at * dim);
        }
}

/* Which path this build took: 16 (AVX-512), 8 (AVX2 + FMA) or 0 (none: not to be used). */
int attention_lanes(void) { return LANES; }

#if LANES

/* e^x for x <= 0 (scores minus their maximum), Cephes' polynomial after a reduction by
 * ln 2: relative error about 2e-7, below bf16's rounding of the cache by far. */
static inline vf vf_exp(vf x) {
    x = vf_max(x, vf_set1(-87.0f));
    vf n = vf_round(vf_mul(x, vf_set1(1.44269504088896341f)));
    vf r = vf_fma(n, vf_set1(-0.693359375f), x);
    r = vf_fma(n, vf_set1(2.12194440e-4f), r);
    vf p = vf_set1(1.9875691500e-4f);
    p = vf_fma(p, r, vf_set1(1.3981999507e-3f));
    p = vf_fma(p, r, vf_set1(8.3334519073e-3f));
    p = vf_fma(p, r, vf_set1(4.1665795894e-2f));
    p = vf_fma(p, r, vf_set1(1.6666665459e-1f));
    p = vf_fma(p, r, vf_set1(5.0000001201e-1f));
    vf r2 = vf_mul(r, r);
    p = vf_fma(p, r2, vf_add(r, vf_set1(1.0f)));
    return vf_mul(p, vi_exp2(vf_to_vi(n)));
}

/* Scores [lo, hi) into softmax weights, unnormalised: e^(score - the largest), the places
 * before start and from length masked (0), each times fold[p] where fold is given (the
 * int8 cache's value scales). Returns 1 / the sum of the weights before folding. */
static inline float softmax_weights(float *scores, int lo, int hi, int start, int length,
                                    const float *fold) {
    for (int p = lo; p < start; p++) scores[p] = -INFINITY;
    for (int p = length; p < hi; p++) scores[p] = -INFINITY;
    vf m = vf_set1(-INFINITY);
    for (int p = lo; p < hi; p += LANES) m = vf_max(m, vf_load(scores + p));
    const float top = vf_hmax(m);
    vf sum = vf_zero();
    for (int p = lo; p < hi; p += LANES) {
        vf e = vf_exp(vf_sub(vf_load(scores + p), vf_set1(top)));
        sum = vf_add(sum, e);
        vf_store(scores + p, fold ? vf_mul(e, vf_load(fold + p)) : e);
    }
    /* e^-87, where the exponential's argument was clamped, must not weigh a masked place. */
    for (int p = lo; p < start; p++) scores[p] = 0.0f;
    for (int p = length; p < hi; p++) scores[p] = 0.0f;
    return 1.0f / vf_hsum(sum);
}

static void head_attend(const float *q, const uint16_t *keys, const uint16_t *values,
                        int start, int length, int dim, float scale, float *scores,
                        float *out) {
    const int half = dim / 2;
    const int first_tile = start / 16, tiles = (length + 15) / 16;
    /* Scores, a tile of 16 positions at a time: lane i of the accumulators is position
     * 16 t + i; each 32-bit lane of a key row holds dimensions 2j and 2j + 1. */
    for (int t = first_tile; t < tiles; t++) {
        const uint16_t *tile = keys + (size_t)t * half * 32;
        vf acc[16 / LANES], acc2[16 / LANES];
        for (int a = 0; a < 16 / LANES; a++) acc[a] = acc2[a] = vf_zero();
        for (int j = 0; j < half; j++) {
            vf q0 = vf_set1(q[2 * j]), q1 = vf_set1(q[2 * j + 1]);
            for (int a = 0; a < 16 / LANES; a++) {
                vi k = vi_load(tile + (size_t)j * 32 + a * LANES * 2);
                acc[a] = vf_fma(q0, vi_lo(k), acc[a]);
                acc2[a] = vf_fma(q1, vi_hi(k), acc2[a]);
            }
        }
        for (int a = 0; a < 16 / LANES; a++)
            vf_store(scores + t * 16 + a * LANES, vf_mul(vf_add(acc[a], acc2[a]), vf_set1(scale)));
    }
    const int lo = first_tile * 16, hi = tiles * 16;
    const float inv = softmax_weights(scores, lo, hi, start, length, NULL);

    /* Weighted values, two positions a pair: lane d of a pair row holds dimension d of
     * positions 2 pp (low half) and 2 pp + 1 (high half). The weights outside
     * [start, length) are 0, and the cache's unused places hold 0 (allocated zeroed), so
     * the odd last pair adds nothing. */
    vf acc[256 / LANES];
    const int chunks = dim / LANES;
    for (int c = 0; c < chunks; c++) acc[c] = vf_zero();
    for (int pp = lo / 2; pp < (length + 1) / 2; pp++) {
        vf w0 = vf_set1(scores[2 * pp]), w1 = vf_set1(scores[2 * pp + 1]);
        const uint16_t *pair = values + (size_t)pp * dim * 2;
        for (int c = 0; c < chunks; c++) {
            vi v = vi_load(pair + c * LANES * 2);
            acc[c] = vf_fma(w0, vi_lo(v), acc[c]);
            acc[c] = vf_fma(w1, vi_hi(v), acc[c]);
        }
    }
    for (int c = 0; c < chunks; c++) vf_store(out + c * LANES, vf_mul(acc[c], vf_set1(inv)));
}

static void head_attend_i8(const float *q, const int8_t *keys, const int8_t *values,
                           const float *key_scales, const float *value_scales, int start,
                           int length, int dim, float scale, float *scores, float *out) {
    const int first_tile = start / 16, tiles = (length + 15) / 16;
    /* Four chains of sums (dimensions d mod 4), so that the adds need not wait on each
     * other; a tile's 16 positions in the lanes. */
    for (int t = first_tile; t < tiles; t++) {
        const int8_t *tile = keys + (size_t)t * dim * 16;
        for (int a = 0; a < 16 / LANES; a++) {
            vf acc0 = vf_zero(), acc1 = vf_zero(), acc2 = vf_zero(), acc3 = vf_zero();
            const int8_t *k = tile + a * LANES;
            for (int d = 0; d < dim; d += 4) {
                acc0 = vf_fma(vf_set1(q[d]), vf_from_i8(k + (size_t)d * 16), acc0);
                acc1 = vf_fma(vf_set1(q[d + 1]), vf_from_i8(k + (size_t)(d + 1) * 16), acc1);
                acc2 = vf_fma(vf_set1(q[d + 2]), vf_from_i8(k + (size_t)(d + 2) * 16), acc2);
                acc3 = vf_fma(vf_set1(q[d + 3]), vf_from_i8(k + (size_t)(d + 3) * 16), acc3);
            }
            vf sum = vf_add(vf_add(acc0, acc1), vf_add(acc2, acc3));
            const int p = t * 16 + a * LANES;
            vf_store(scores + p, vf_mul(sum, vf_mul(vf_load(key_scales + p), vf_set1(scale))));
        }
    }
    const int lo = first_tile * 16, hi = tiles * 16;
    /* A position's value scale folds into its weight. */
    const float inv = softmax_weights(scores, lo, hi, start, length, value_scales);

    /* Weighted values, two positions at a time in two sets of sums. */
    vf even[256 / LANES], odd[256 / LANES];
    const int chunks = dim / LANES;
    for (int c = 0; c < chunks; c++) even[c] = odd[c] = vf_zero();
    int p = start;
    for (; p + 1 < length; p += 2) {
        vf w0 = vf_set1(scores[p]), w1 = vf_set1(scores[p + 1]);
        const int8_t *v0 = values + (size_t)p * dim, *v1 = v0 + dim;
        for (int c = 0; c < chunks; c++) {
            even[c] = vf_fma(w0, vf_from_i8(v0 + c * LANES), even[c]);
            odd[c] = vf_fma(w1, vf_from_i8(v1 + c * LANES), odd[c]);
        }
    }
    if (p < length) {
        vf w0 = vf_set1(scores[p]);
        for (int c = 0; c < chunks; c++)
            even[c] = vf_fma(w0, vf_from_i8(values + (size_t)p * dim + c * LANES), even[c]);
    }
    for (int c = 0; c < chunks; c++)
        vf_store(out + c * LANES, vf_mul(vf_add(even[c], odd[c]), vf_set1(inv)));
}

/* One decoding step for every row and head, over the bf16 cache (bits 16) or the int8
 * one (bits 8, with its scales). Returns 0, or -1 where the shapes are outside what this
 * kernel computes. */
static int decode_rows(int bits, const float *query, const void *keys, const void *values,
                       const float *key_scales, const float *value_scales,
                       const int32_t *start, int rows, int heads, int dim, int capacity,
                       int length, float scale, float *out) {
    if (dim % 16 || dim > 256 || capacity % 16 || length < 1 || length > capacity) return -1;
    float *scores = malloc(sizeof(float) * (size_t)(capacity + 16));
    if (!scores) return -1;
    const size_t head = (size_t)capacity * dim;
    for (int r = 0; r < rows; r++) {
        int from = start ? start[r] : 0;
        if (from < 0 || from >= length) from = 0;
        for (int h = 0; h < heads; h++) {
            const size_t at = (size_t)r * heads + h;
            if (bits == 8)
                head_attend_i8(query + at * dim, (const int8_t *)keys + at * head,
                               (const int8_t *)values + at * head, key_scales + at * capacity,
                               value_scales + at * capacity, from, length, dim, scale, scores,
                               out + at * dim);
            else
                head_attend(query + at * dim, (const uint16_t *)keys + at * head,
                            (const uint16_t *)values + at * head, from, length, dim, scale,
                            scores, out + at * dim);
        }
    }
    free(scores);
    return 0;
}

int attention_decode(const float *query, const uint16_t *keys, const uint16_t *values,
                     const int32_t *start, int rows, int heads, int dim, int capacity,
                     int length, float scale, float *out) {
    return decode_rows(16, query, keys, values, NULL, NULL, start, rows, heads, dim, capacity,
                       length, scale, out);
}

/* ``attention_decode`` over the int8 cache. */
int attention_decode_i8(const float *query, const int8_t *keys, const int8_t *values,
                        const float *key_scales, const float *value_scales,
                        const int32_t *start, int rows, int heads, int dim, int capacity,
                        int length, float scale, float *out) {
    return decode_rows(8, query, keys, values, key_scales, value_scales, start, rows, heads,
                       dim, capacity, length, scale, out);
}

#else
int attention_decode(const float *query, const uint16_t *keys, const uint16_t *values,
                     const int32_t *start, int rows, int heads, int dim, int capacity,
                     int length, float scale, float *out) {
    return -1;
}

int attention_decode_i8(const float *query, const int8_t *keys, const int8_t *values,
                        const float *key_scales, const float *value_scales,
                        const int32_t *start, int rows, int heads, int dim, int capacity,
                        int length, float scale, float *out) {
    return -1;
}
#endif
