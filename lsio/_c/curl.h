/* lsio's C HTTP transport: batches of range GETs driven by libcurl's multi interface.
 *
 * One transport (lsio_http) per event loop: a curl multi handle, a share handle (TLS
 * sessions, DNS) and an epoll fd holding every socket curl watches, so the event loop waits
 * on that one fd. A batch is an array of requests (lsio_http_req) read from arrays the
 * caller fills (URL index, range, destination, header list); the transport keeps at most
 * `concurrency` of them in flight, parses each answer's status line, Content-Range,
 * Content-Length, ETag and Last-Modified in C, and lands a 206 body straight in its
 * destination. Anything else (another status, a range not the one asked, a body longer
 * than announced, a transfer error) stops that request early and is left to the caller,
 * which serves it through its full (aiohttp) path; the batch's later requests of that URL
 * are then not sent (LSIO_HTTP_SKIPPED): a server that ignores Range, a missing object,
 * a redirect is met once, not once per range.
 *
 * Nothing here runs on another thread: every curl call is made from lsio_http_* on the
 * caller's thread, so a cancelled batch never writes after lsio_http_batch_cancel returns.
 * This file is both the C header and cffi's cdef (see lsio/_cbuild.py).
 */
#ifndef LSIO_CURL_H
#define LSIO_CURL_H

#include <stdint.h>

#define LSIO_HTTP_VALIDATOR 96

#define LSIO_HTTP_DONE 1
#define LSIO_HTTP_OK 2
#define LSIO_HTTP_NOT_PARTIAL 4
#define LSIO_HTTP_BAD_RANGE 8
#define LSIO_HTTP_OVERFLOW 16
#define LSIO_HTTP_LONG_VALIDATOR 32
#define LSIO_HTTP_NOMEM 64
#define LSIO_HTTP_CANCELLED 128
#define LSIO_HTTP_SKIPPED 256

typedef struct lsio_http lsio_http;
typedef struct lsio_http_batch lsio_http_batch;

typedef struct {
    /* filled by the caller */
    int64_t start;          /* first byte: the request asks Range: bytes=start-(start+length-1) */
    int64_t length;         /* bytes asked, >= 1 */
    char *dest;             /* where the body lands; NULL: memory the transport allocates once
                               the answer tells the body's length (see lsio_http_take_arena) */
    int32_t url;            /* index into the batch's URLs */
    int32_t headers;        /* index into the batch's header blocks, -1 for none */
    /* filled by the transport */
    int32_t flags;          /* LSIO_HTTP_* */
    int32_t status;         /* the final answer's status, 0 if none came */
    int32_t code;           /* the transfer's CURLcode */
    int32_t own_range;      /* 1: the header block carries Range itself (signed with it) */
    int64_t got;            /* body bytes landed */
    int64_t total;          /* Content-Range's complete length, -1 if '*' */
    int64_t content_length; /* -1 if not sent */
    char *body;             /* dest, or memory the transport allocated: in an arena (below)
                               or, for a big body, its own (lsio_http_take_body) */
    int32_t arena;          /* the batch's arena holding body, -1 if none */
    char etag[96];          /* NUL-terminated, "" if not sent (LSIO_HTTP_VALIDATOR) */
    char modified[96];      /* Last-Modified, likewise */
    char retry_after[32];   /* Retry-After, likewise */
    int64_t ttfb_us;        /* from the request's start to its answer's first byte */
    int64_t total_us;       /* to its end */
} lsio_http_req;

typedef struct {
    int verify;             /* 1: verify the peer's certificate and host name; 0: neither */
    const char *cainfo;     /* a CA bundle file, or NULL */
    const char *capath;     /* a directory of hashed CA certificates, or NULL */
    const char *cert;       /* a client certificate (PEM), or NULL */
    const char *key;        /* its key, or NULL */
    long timeout_ms;        /* deadline of one request, headers and body */
    long connect_timeout_ms;
} lsio_http_opts;

/* AWS Signature Version 4 of a batch's ranges, per header block (lsio/backends/cloud/_sigv4.py
 * makes the parts): the canonical request of a range "bytes=a-b" is pre + "range:bytes=a-b\n"
 * + post; the string to sign sts_prefix + its SHA-256 in hex; the request carries the block's
 * headers, "Range: bytes=a-b" and "Authorization: " + auth_prefix + HMAC-SHA256(key, string
 * to sign) in hex. */
typedef struct {
    const unsigned char *key;   /* the 32-byte signing key; NULL: the block is not signed here */
    const char *sts_prefix;
    const char *pre;
    const char *post;
    const char *auth_prefix;
} lsio_http_sign;

int lsio_http_global_init(void);
int lsio_http_sigv4(const lsio_http_sign *s, const char *range, char *out, int cap);
lsio_http *lsio_http_new(long max_host_connections, int *err);
int lsio_http_fd(lsio_http *h);
void lsio_http_free(lsio_http *h);
int lsio_http_drive(lsio_http *h);
int lsio_http_on_timer(lsio_http *h);
long lsio_http_timer(lsio_http *h, uint64_t *generation);
uint64_t lsio_http_sent(lsio_http *h);
const char *lsio_http_strerror(int code);
const char *lsio_http_version(void);

lsio_http_batch *lsio_http_batch_new(lsio_http *h, lsio_http_req *reqs, int n,
                                     char **urls, int nurls, char **headers, int nheaders,
                                     const lsio_http_sign *signs, const lsio_http_opts *opts,
                                     int concurrency);
int lsio_http_batch_start(lsio_http_batch *b);
int lsio_http_batch_left(lsio_http_batch *b);
int lsio_http_batch_sent(lsio_http_batch *b);
int lsio_http_batch_finished(lsio_http_batch *b, int32_t **order);
void lsio_http_batch_cancel(lsio_http_batch *b);
void lsio_http_batch_free(lsio_http_batch *b);
char *lsio_http_take_body(lsio_http_batch *b, int i);
char *lsio_http_take_arena(lsio_http_batch *b, int k, int64_t *size);
int lsio_http_arena_busy(lsio_http_batch *b, int k);
void lsio_http_free_body(char *body);

/* Small bodies of a batch's requests without a destination share arenas (blocks of
 * LSIO_HTTP_ARENA bytes, bodies 64-byte aligned): one allocation, and one owner on the
 * caller's side, per many bodies. The caller takes an arena (lsio_http_take_arena, then
 * frees it with lsio_http_free_body) once a finished body is in it; the transport may still
 * land bodies in it while lsio_http_arena_busy says so (the batch's last arena, or one with
 * requests in flight), so the caller keeps it alive until then (or until
 * lsio_http_batch_free returns), and only as long as it keeps views of it after that: the
 * bodies of a long batch that are copied elsewhere are not all held to its end. Arenas not
 * taken are freed with the batch. */
#define LSIO_HTTP_ARENA 1048576
/* Bodies longer than this get memory of their own. */
#define LSIO_HTTP_ARENA_BODY 262144

#endif
