"""cffi API-mode builder for ``lsio._codecs``: decode many chunks and scatter them into an
output array in one C call, without the GIL.

Small Zarr chunks (16 KiB) cost ~15-20 us each to decompress but ~40 us more in Python per
chunk (numcodecs' argument checks, views, the copy into place), and numcodecs 0.16 holds the
GIL while it decompresses. ``lsio_decode_scatter`` takes a batch of chunks, decompresses each
into a per-call scratch buffer with the system's libblosc or libzstd, and copies the selected
block row by row into the output; cffi releases the GIL for the whole batch. Built only where
the headers exist (``scripts/system-deps.sh`` installs them); lsio otherwise decodes through
numcodecs.
"""

from __future__ import annotations

from cffi import FFI

ffibuilder = FFI()

ffibuilder.cdef("""
    #define LSIO_MAX_DIM 8
    typedef struct {
        const char *src;            /* the stored chunk */
        size_t srclen;
        char *dst;                  /* first output byte of the block */
        int64_t src_offset;         /* first decoded byte of the block */
        int64_t shape[8];           /* block shape */
        int64_t dst_strides[8];     /* output strides in bytes */
    } lsio_chunk;
    int lsio_decode_scatter(int codec, lsio_chunk *chunks, int n, int ndim,
                            const int64_t *chunk_shape, int itemsize, char *scratch,
                            size_t scratch_len);
""")

ffibuilder.set_source("lsio._codecs", r"""
#include <stdint.h>
#include <string.h>
#include <blosc.h>
#include <zstd.h>

#define LSIO_MAX_DIM 8
typedef struct {
    const char *src;
    size_t srclen;
    char *dst;
    int64_t src_offset;
    int64_t shape[LSIO_MAX_DIM];
    int64_t dst_strides[LSIO_MAX_DIM];
} lsio_chunk;

/* Copy a C-order block of `shape` from src (strides of the full decoded chunk) to dst. */
static void scatter(const char *src, const int64_t *src_strides, char *dst,
                    const int64_t *dst_strides, const int64_t *shape, int ndim, int itemsize)
{
    int64_t row = shape[ndim - 1] * itemsize;
    if (ndim == 1) {
        memcpy(dst, src, (size_t)row);
        return;
    }
    int64_t idx[LSIO_MAX_DIM] = {0};
    for (;;) {
        const char *s = src;
        char *d = dst;
        for (int k = 0; k < ndim - 1; k++) {
            s += idx[k] * src_strides[k];
            d += idx[k] * dst_strides[k];
        }
        memcpy(d, s, (size_t)row);
        int k = ndim - 2;
        while (k >= 0 && ++idx[k] == shape[k])
            idx[k--] = 0;
        if (k < 0)
            return;
    }
}

/* codec 0: raw bytes, 1: blosc, 2: zstd. Returns -1 - i when chunk i is corrupt, else 0. */
static int lsio_decode_scatter(int codec, lsio_chunk *chunks, int n, int ndim,
                               const int64_t *chunk_shape, int itemsize, char *scratch,
                               size_t scratch_len)
{
    int64_t strides[LSIO_MAX_DIM];
    int64_t step = itemsize;
    for (int k = ndim - 1; k >= 0; k--) {
        strides[k] = step;
        step *= chunk_shape[k];
    }
    size_t need = (size_t)step;
    if (need > scratch_len)
        return -1 - n;
    ZSTD_DCtx *z = codec == 2 ? ZSTD_createDCtx() : NULL;
    for (int i = 0; i < n; i++) {
        lsio_chunk *c = &chunks[i];
        const char *data = scratch;
        if (codec == 0) {
            if (c->srclen != need) { if (z) ZSTD_freeDCtx(z); return -1 - i; }
            data = c->src;
        } else if (codec == 1) {
            size_t nbytes, cbytes, blocksize;
            if (c->srclen < BLOSC_MIN_HEADER_LENGTH) return -1 - i;
            blosc_cbuffer_sizes(c->src, &nbytes, &cbytes, &blocksize);
            if (nbytes != need || cbytes > c->srclen) return -1 - i;
            if (blosc_decompress_ctx(c->src, scratch, scratch_len, 1) != (int)need)
                return -1 - i;
        } else {
            size_t got = ZSTD_decompressDCtx(z, scratch, scratch_len, c->src, c->srclen);
            if (ZSTD_isError(got) || got != need) { ZSTD_freeDCtx(z); return -1 - i; }
        }
        scatter(data + c->src_offset, strides, c->dst, c->dst_strides, c->shape, ndim,
                itemsize);
    }
    if (z)
        ZSTD_freeDCtx(z);
    return 0;
}
""", libraries=["blosc", "zstd"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
