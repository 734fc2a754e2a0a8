/* lsio's batched chunk decoder: the interface Python sees (also the cffi cdef, read by
   lsio/_codec_build.py; keep it to declarations cffi can parse). */

#ifndef LSIO_CODECS_H
#define LSIO_CODECS_H

#define LSIO_MAX_DIM 8

/* lsio_decode_scatter's codec */
#define LSIO_CODEC_RAW 0
#define LSIO_CODEC_BLOSC 1
#define LSIO_CODEC_ZSTD 2
#define LSIO_CODEC_ZLIB 3

/* lsio_decode_scatter's results (*failed: the index of the chunk concerned): OK; CORRUPT,
   chunk *failed is not a valid chunk of chunk_bytes; BOUNDS, job *failed reaches outside its
   chunk or its output (nothing was written: every job is checked before any copy); NOMEM,
   no memory for a zstd or zlib context or the scratch; BADARGS, wrong ndim, itemsize,
   shuffle or scratch. */
#define LSIO_DECODE_OK 0
#define LSIO_DECODE_CORRUPT 1
#define LSIO_DECODE_BOUNDS 2
#define LSIO_DECODE_NOMEM 3
#define LSIO_DECODE_BADARGS 4

/* One stored chunk and where its selected block goes (lsio/zarr/_batched.py builds an
   array of these; its numpy dtype is derived from this struct through cffi). */
typedef struct {
    const char *src;            /* the stored chunk */
    size_t srclen;
    char *dst;                  /* first output byte of the block */
    int64_t src_offset;         /* first decoded byte of the block */
    int64_t shape[8];           /* block shape (LSIO_MAX_DIM) */
    int64_t src_strides[8];     /* strides of the block in the decoded chunk, in bytes
                                   (selection steps and a transpose are folded in) */
    int64_t dst_strides[8];     /* output strides in bytes */
    char *out;                  /* the output buffer the block lies in: the decoder refuses */
    size_t outlen;              /* a job whose block reaches outside [out, out + outlen) */
} lsio_chunk;

/* Decode chunks of `chunk_bytes` decoded bytes each and copy each block to its place,
   element by element of `itemsize` bytes; swap != 0 reverses each element's bytes (stored
   in the other byte order than the output). `shuffle` > 1: after decompression, undo a
   byte shuffle of elements of that many bytes (HDF5's shuffle filter, numcodecs' Shuffle;
   chunk_bytes must be a multiple of it); 0 or 1: none. Every job's block is first checked
   to lie inside the decoded chunk and inside its output buffer, whatever the caller
   computed. `scratch` (scratch_len >= chunk_bytes, twice that with a shuffle) holds a
   decompressed chunk; NULL: allocated here, once a chunk's header says it may be a chunk
   of chunk_bytes (untrusted metadata may make chunk_bytes huge). Returns an LSIO_DECODE_*
   result; *failed is the chunk concerned (or -1). */
int lsio_decode_scatter(int codec, int shuffle, lsio_chunk *chunks, int n, int ndim,
                        size_t chunk_bytes, int itemsize, int swap, char *scratch,
                        size_t scratch_len, int *failed);

#endif
