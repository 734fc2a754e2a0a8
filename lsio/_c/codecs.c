/* Decode many chunks and scatter them into an output array in one C call, without the GIL
   (cffi releases it). Small Zarr chunks (16 KiB) cost ~15-20 us each to decompress but
   ~40 us more in Python per chunk through numcodecs, which also holds the GIL while it
   decompresses. Each chunk is decompressed with the system's libblosc, libzstd or zlib into
   a per-call scratch buffer (HDF5's byte shuffle undone into a second one), and the selected
   block is copied row by row into the output. */
#include <limits.h>
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <blosc.h>
#include <zstd.h>
#define ZLIB_CONST
#include <zlib.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "codecs.h"

/* One element of `itemsize` bytes, its bytes reversed when `swap`. */
static inline void put(char *d, const char *s, int itemsize, int swap)
{
    if (!swap) {
        switch (itemsize) {
        case 1: *d = *s; return;
        case 2: memcpy(d, s, 2); return;
        case 4: memcpy(d, s, 4); return;
        case 8: memcpy(d, s, 8); return;
        default: memcpy(d, s, (size_t)itemsize); return;
        }
    }
    for (int b = 0; b < itemsize; b++)
        d[b] = s[itemsize - 1 - b];
}

/* Copy a block of `shape` from src to dst, both with their own byte strides: whole rows
   with memcpy when the last dimension is contiguous on both sides and no swap is needed,
   else element by element. */
static void scatter(const char *src, const int64_t *src_strides, char *dst,
                    const int64_t *dst_strides, const int64_t *shape, int ndim, int itemsize,
                    int swap)
{
    int last = ndim - 1;
    int rows = !swap && src_strides[last] == itemsize && dst_strides[last] == itemsize;
    int64_t row = shape[last] * itemsize;
    for (int k = 0; k < ndim; k++)
        if (shape[k] <= 0)
            return;
    int64_t idx[LSIO_MAX_DIM] = {0};
    for (;;) {
        const char *s = src;
        char *d = dst;
        for (int k = 0; k < last; k++) {
            s += idx[k] * src_strides[k];
            d += idx[k] * dst_strides[k];
        }
        if (rows) {
            memcpy(d, s, (size_t)row);
        } else {
            for (int64_t i = 0; i < shape[last]; i++)
                put(d + i * dst_strides[last], s + i * src_strides[last], itemsize, swap);
        }
        int k = last - 1;
        while (k >= 0 && ++idx[k] == shape[k])
            idx[k--] = 0;
        if (k < 0)
            return;
    }
}

/* The most bytes a zlib stream of n bytes can decode to: deflate's longest match (258
   bytes) costs at least 2 bits, so ~1032 decoded bytes per stored byte at best. */
#define ZLIB_MAX_RATIO 1032

/* Whether chunk c may be a chunk of `need` decoded bytes, from its header alone: the
   scratch buffer (`need` bytes, which untrusted metadata may make huge) is allocated only
   for chunks that pass. A zstd frame may leave its size out, or be the first of several;
   a zlib stream never says its size, but cannot decode to more than ZLIB_MAX_RATIO times
   its own. */
static int plausible(int codec, const lsio_chunk *c, size_t need)
{
    if (codec == LSIO_CODEC_RAW)
        return c->srclen == need;
    if (codec == LSIO_CODEC_BLOSC) {
        size_t nbytes, cbytes, blocksize;
        if (c->srclen < BLOSC_MIN_HEADER_LENGTH || need > (size_t)INT32_MAX)
            return 0;  /* blosc 1 returns the decoded size as an int */
        blosc_cbuffer_sizes(c->src, &nbytes, &cbytes, &blocksize);
        return nbytes == need && cbytes <= c->srclen;
    }
    if (codec == LSIO_CODEC_ZLIB) {
        const unsigned char *h = (const unsigned char *)c->src;
        /* RFC 1950 header: deflate, window <= 32 KiB, check bits, no preset dictionary */
        if (c->srclen < 6 || (h[0] & 0x0f) != 8 || (h[0] >> 4) > 7
                || ((unsigned)h[0] << 8 | h[1]) % 31 != 0 || (h[1] & 0x20))
            return 0;
        return need / ZLIB_MAX_RATIO <= c->srclen;
    }
    unsigned long long size = ZSTD_getFrameContentSize(c->src, c->srclen);
    if (size == ZSTD_CONTENTSIZE_ERROR)
        return 0;
    return size == ZSTD_CONTENTSIZE_UNKNOWN || size <= need;
}

/* Inflate chunk c's zlib stream into out: 1 when it ends having written exactly `need`
   bytes, 0 when it is corrupt, truncated or of another size, -1 out of memory. zlib's
   counts are 32-bit: the buffers are fed in pieces. Bytes after the stream's end are
   ignored, as Python's zlib.decompress (numcodecs' Zlib) ignores them. */
static int inflate_chunk(z_stream *zs, const lsio_chunk *c, char *out, size_t need)
{
    if (inflateReset(zs) != Z_OK)
        return 0;
    size_t in_left = c->srclen, out_left = need;
    zs->next_in = (const Bytef *)c->src;
    zs->next_out = (Bytef *)out;
    for (;;) {
        uInt ain = in_left > UINT_MAX ? UINT_MAX : (uInt)in_left;
        uInt aout = out_left > UINT_MAX ? UINT_MAX : (uInt)out_left;
        zs->avail_in = ain;
        zs->avail_out = aout;
        int r = inflate(zs, Z_NO_FLUSH);
        in_left -= ain - zs->avail_in;
        out_left -= aout - zs->avail_out;
        if (r == Z_STREAM_END)
            return out_left == 0;
        if (r == Z_MEM_ERROR)
            return -1;
        if (r != Z_OK)  /* Z_BUF_ERROR: input ran out or output is full; a bad stream */
            return 0;
    }
}

/* Undo a byte shuffle of `len / es` elements of `es` bytes: byte j of element i was stored
   at j * count + i. Inlined with a constant `es` for the common sizes. */
static inline void unshuffle_n(char *dst, const char *src, size_t len, size_t es)
{
    size_t count = len / es;
    for (size_t i = 0; i < count; i++)
        for (size_t j = 0; j < es; j++)
            dst[i * es + j] = src[j * count + i];
}

/* 4-byte elements (float32, HDF5's commonest): with SSE2 (every x86-64), 16 elements a step
   interleaved from the four byte planes (~5x the byte loop, which -O2 leaves scalar). */
static void unshuffle4(char *dst, const char *src, size_t len)
{
    size_t count = len / 4, i = 0;
#ifdef __SSE2__
    const char *p0 = src, *p1 = src + count, *p2 = p1 + count, *p3 = p2 + count;
    for (; i + 16 <= count; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(p0 + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(p1 + i));
        __m128i c = _mm_loadu_si128((const __m128i *)(p2 + i));
        __m128i d = _mm_loadu_si128((const __m128i *)(p3 + i));
        __m128i ab_lo = _mm_unpacklo_epi8(a, b), ab_hi = _mm_unpackhi_epi8(a, b);
        __m128i cd_lo = _mm_unpacklo_epi8(c, d), cd_hi = _mm_unpackhi_epi8(c, d);
        __m128i *out = (__m128i *)(dst + 4 * i);
        _mm_storeu_si128(out, _mm_unpacklo_epi16(ab_lo, cd_lo));
        _mm_storeu_si128(out + 1, _mm_unpackhi_epi16(ab_lo, cd_lo));
        _mm_storeu_si128(out + 2, _mm_unpacklo_epi16(ab_hi, cd_hi));
        _mm_storeu_si128(out + 3, _mm_unpackhi_epi16(ab_hi, cd_hi));
    }
#endif
    for (; i < count; i++)
        for (size_t j = 0; j < 4; j++)
            dst[i * 4 + j] = src[j * count + i];
}

static void unshuffle(char *dst, const char *src, size_t len, int es)
{
    switch (es) {
    case 2: unshuffle_n(dst, src, len, 2); return;
    case 4: unshuffle4(dst, src, len); return;
    case 8: unshuffle_n(dst, src, len, 8); return;
    default: unshuffle_n(dst, src, len, (size_t)es); return;
    }
}

/* Decompress chunk c (plausible) into scratch (or point at it, raw), then undo the
   shuffle into the scratch's second half (its first, raw); sets *data to the decoded
   bytes. LSIO_DECODE_CORRUPT when the chunk is not a valid chunk of `need` bytes. */
static int decode(int codec, int shuffle, ZSTD_DCtx *z, z_stream *zs, const lsio_chunk *c,
                  size_t need, char *scratch, const char **data)
{
    const char *got = c->src;
    if (codec == LSIO_CODEC_BLOSC) {
        if (blosc_decompress_ctx(c->src, scratch, need, 1) != (int)need)
            return LSIO_DECODE_CORRUPT;
        got = scratch;
    } else if (codec == LSIO_CODEC_ZSTD) {
        size_t n = ZSTD_decompressDCtx(z, scratch, need, c->src, c->srclen);
        if (ZSTD_isError(n) || n != need)
            return LSIO_DECODE_CORRUPT;
        got = scratch;
    } else if (codec == LSIO_CODEC_ZLIB) {
        int r = inflate_chunk(zs, c, scratch, need);
        if (r <= 0)
            return r < 0 ? LSIO_DECODE_NOMEM : LSIO_DECODE_CORRUPT;
        got = scratch;
    }
    if (shuffle > 1) {
        char *to = codec == LSIO_CODEC_RAW ? scratch : scratch + need;
        unshuffle(to, got, need, shuffle);
        got = to;
    }
    *data = got;
    return LSIO_DECODE_OK;
}

/* Whether a block of `shape` starting `start` bytes into a buffer of `len` bytes, with the
   byte `strides`, stays inside it (checked arithmetic: strides may be negative, and a
   caller's wrong shape or stride must not wrap into a small number). */
static int block_fits(int64_t start, const int64_t *shape, const int64_t *strides, int ndim,
                      int itemsize, size_t len)
{
    int64_t lo = start, hi = start;
    for (int k = 0; k < ndim; k++)
        if (shape[k] < 0)
            return 0;
    for (int k = 0; k < ndim; k++)
        if (shape[k] == 0)
            return 1;  /* an empty block: nothing is copied */
    for (int k = 0; k < ndim; k++) {
        int64_t span;
        if (__builtin_mul_overflow(shape[k] - 1, strides[k], &span))
            return 0;
        if (__builtin_add_overflow(span < 0 ? lo : hi, span, span < 0 ? &lo : &hi))
            return 0;
    }
    if (lo < 0 || __builtin_add_overflow(hi, (int64_t)itemsize, &hi))
        return 0;
    return (uint64_t)hi <= (uint64_t)len;
}

/* Whether job c copies only from inside a decoded chunk of chunk_bytes and only into its
   output buffer [out, out + outlen). */
static int job_fits(const lsio_chunk *c, int ndim, size_t chunk_bytes, int itemsize)
{
    if (!c->out)
        return 0;
    /* dst's offset in the output; before it (or absurdly far past it): negative, refused */
    uint64_t delta = (uint64_t)(uintptr_t)c->dst - (uint64_t)(uintptr_t)c->out;
    int64_t start = delta > (uint64_t)INT64_MAX ? -1 : (int64_t)delta;
    return block_fits(c->src_offset, c->shape, c->src_strides, ndim, itemsize, chunk_bytes)
        && block_fits(start, c->shape, c->dst_strides, ndim, itemsize, c->outlen);
}

/* The scratch bytes a call needs: a decompressed chunk, and a second for the unshuffled
   one; 0 on overflow (BADARGS) or when nothing is needed (raw, no shuffle: *none set). */
static size_t scratch_need(int codec, int shuffle, size_t chunk_bytes, int *none)
{
    size_t parts = (size_t)(codec != LSIO_CODEC_RAW) + (size_t)(shuffle > 1), want;
    *none = parts == 0;
    if (parts == 0 || __builtin_mul_overflow(chunk_bytes, parts, &want))
        return 0;
    return want ? want : 1;
}

int lsio_decode_scatter(int codec, int shuffle, lsio_chunk *chunks, int n, int ndim,
                        size_t chunk_bytes, int itemsize, int swap, char *scratch,
                        size_t scratch_len, int *failed)
{
    *failed = -1;
    int none;
    size_t want = scratch_need(codec, shuffle, chunk_bytes, &none);
    if (codec < LSIO_CODEC_RAW || codec > LSIO_CODEC_ZLIB || shuffle < 0
            || (shuffle > 1 && chunk_bytes % (size_t)shuffle) || (!none && !want)
            || (scratch && want > scratch_len) || ndim < 1 || ndim > LSIO_MAX_DIM
            || itemsize < 1 || n < 0)
        return LSIO_DECODE_BADARGS;
    for (int i = 0; i < n; i++) {  /* every job first: a wrong plan writes nothing */
        if (!job_fits(&chunks[i], ndim, chunk_bytes, itemsize)) {
            *failed = i;
            return LSIO_DECODE_BOUNDS;
        }
    }
    ZSTD_DCtx *z = NULL;
    z_stream zs;
    int zs_live = 0;
    if (codec == LSIO_CODEC_ZSTD && !(z = ZSTD_createDCtx()))
        return LSIO_DECODE_NOMEM;
    if (codec == LSIO_CODEC_ZLIB) {
        memset(&zs, 0, sizeof zs);
        if (inflateInit(&zs) != Z_OK)
            return LSIO_DECODE_NOMEM;
        zs_live = 1;
    }
    int ret = LSIO_DECODE_OK;
    char *own = NULL;  /* the scratch, when the caller passed none: allocated on first need */
    for (int i = 0; i < n; i++) {
        const lsio_chunk *c = &chunks[i];
        if (!plausible(codec, c, chunk_bytes)) {
            *failed = i;
            ret = LSIO_DECODE_CORRUPT;
            break;
        }
        if (!none && !scratch) {
            if (!(own = malloc(want))) {
                *failed = i;
                ret = LSIO_DECODE_NOMEM;
                break;
            }
            scratch = own;
        }
        const char *data;
        ret = decode(codec, shuffle, z, &zs, c, chunk_bytes, scratch, &data);
        if (ret != LSIO_DECODE_OK) {
            *failed = i;
            break;
        }
        scatter(data + c->src_offset, c->src_strides, c->dst, c->dst_strides, c->shape,
                ndim, itemsize, swap != 0);
    }
    ZSTD_freeDCtx(z);  /* accepts NULL */
    if (zs_live)
        inflateEnd(&zs);
    free(own);
    return ret;
}
