/* Decode many chunks and scatter them into an output array in one C call, without the GIL
   (cffi releases it). Small Zarr chunks (16 KiB) cost ~15-20 us each to decompress but
   ~40 us more in Python per chunk through numcodecs, which also holds the GIL while it
   decompresses. Each chunk is decompressed with the system's libblosc or libzstd into a
   per-call scratch buffer, and the selected block is copied row by row into the output. */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <blosc.h>
#include <zstd.h>

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

/* Whether chunk c may be a chunk of `need` decoded bytes, from its header alone: the
   scratch buffer (`need` bytes, which untrusted metadata may make huge) is allocated only
   for chunks that pass. A zstd frame may leave its size out, or be the first of several. */
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
    unsigned long long size = ZSTD_getFrameContentSize(c->src, c->srclen);
    if (size == ZSTD_CONTENTSIZE_ERROR)
        return 0;
    return size == ZSTD_CONTENTSIZE_UNKNOWN || size <= need;
}

/* Decompress chunk c (plausible) into scratch (or point at it, raw); the decoded bytes, or
   NULL when the chunk is not a valid chunk of `need` bytes. */
static const char *decode(int codec, ZSTD_DCtx *z, const lsio_chunk *c, size_t need,
                          char *scratch, size_t scratch_len)
{
    if (codec == LSIO_CODEC_RAW)
        return c->src;
    if (codec == LSIO_CODEC_BLOSC) {
        if (blosc_decompress_ctx(c->src, scratch, scratch_len, 1) != (int)need)
            return NULL;
        return scratch;
    }
    size_t got = ZSTD_decompressDCtx(z, scratch, scratch_len, c->src, c->srclen);
    return ZSTD_isError(got) || got != need ? NULL : scratch;
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

int lsio_decode_scatter(int codec, lsio_chunk *chunks, int n, int ndim, size_t chunk_bytes,
                        int itemsize, int swap, char *scratch, size_t scratch_len,
                        int *failed)
{
    *failed = -1;
    if ((codec != LSIO_CODEC_RAW && scratch && chunk_bytes > scratch_len) || ndim < 1
            || ndim > LSIO_MAX_DIM || itemsize < 1 || n < 0)
        return LSIO_DECODE_BADARGS;
    for (int i = 0; i < n; i++) {  /* every job first: a wrong plan writes nothing */
        if (!job_fits(&chunks[i], ndim, chunk_bytes, itemsize)) {
            *failed = i;
            return LSIO_DECODE_BOUNDS;
        }
    }
    ZSTD_DCtx *z = NULL;
    if (codec == LSIO_CODEC_ZSTD && !(z = ZSTD_createDCtx()))
        return LSIO_DECODE_NOMEM;
    int ret = LSIO_DECODE_OK;
    char *own = NULL;  /* the scratch, when the caller passed none: allocated on first need */
    for (int i = 0; i < n; i++) {
        const lsio_chunk *c = &chunks[i];
        if (!plausible(codec, c, chunk_bytes)) {
            *failed = i;
            ret = LSIO_DECODE_CORRUPT;
            break;
        }
        if (codec != LSIO_CODEC_RAW && !scratch) {
            if (!(own = malloc(chunk_bytes ? chunk_bytes : 1))) {
                *failed = i;
                ret = LSIO_DECODE_NOMEM;
                break;
            }
            scratch = own;
            scratch_len = chunk_bytes;
        }
        const char *data = decode(codec, z, c, chunk_bytes, scratch, scratch_len);
        if (!data) {
            *failed = i;
            ret = LSIO_DECODE_CORRUPT;
            break;
        }
        scatter(data + c->src_offset, c->src_strides, c->dst, c->dst_strides, c->shape,
                ndim, itemsize, swap != 0);
    }
    ZSTD_freeDCtx(z);  /* accepts NULL */
    free(own);
    return ret;
}
