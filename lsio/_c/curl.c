/* lsio's C HTTP transport over libcurl's multi interface: see curl.h for the contract and
 * lsio/backends/http/_curl.py for the event-loop side. */
#include "curl.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

_Static_assert(LSIO_HTTP_VALIDATOR == sizeof(((lsio_http_req *)0)->etag), "validator size");

#define DRIVE_ROUNDS 32 /* epoll rounds one drive call may take: bounds its time on the loop */
#define DRIVE_BUDGET_NS 2000000 /* and its time: libcurl drains a busy socket in one call (up
                                 * to ~100 reads of its buffer), so 64 streaming connections
                                 * would hold the loop for their whole bodies; the sockets
                                 * not served stay ready (level-triggered) for the next call.
                                 * 1 ms cost big reads ~10% in loop turns, 4 ms stalls of
                                 * ~10 ms (a 512 KiB receive and its copy come on top) */
#define MAX_EVENTS 64
#define BIG_BODY (1 << 20)
#define BIG_BUFFER (512L << 10) /* libcurl's largest receive buffer (CURL_MAX_READ_SIZE) */

typedef struct slot {
    lsio_http_batch *b;
    CURL *easy;
    int i;                  /* the request it serves, -1 when free */
    int headers_done;
    int at_start;           /* the next header line is an answer's status line */
    int64_t cr_start, cr_end; /* Content-Range, end exclusive; -1: none */
    int64_t expect;         /* body bytes the answer announced */
    int64_t clen_seen;      /* Content-Length as parsed, -2: not sent */
    char range[48];
    struct curl_slist *own; /* a signed request's own header list */
    int paused;             /* its body stopped landing when the call's time ran out */
} slot;

typedef struct {
    char *base;
    int64_t used;
    int taken;              /* the caller owns it (and frees it) */
    int landing;            /* bodies placed in it whose requests have not finished */
} arena;

struct lsio_http_batch {
    lsio_http *h;
    lsio_http_req *reqs;
    int n, next, done, active, cancelled;
    int sent;               /* requests handed to libcurl */
    char **urls;
    int nurls;
    struct curl_slist **lists;
    int nlists;
    const lsio_http_sign *signs; /* per header block, or NULL */
    lsio_http_opts opts;
    char *cainfo, *capath, *cert, *key; /* owned copies */
    slot *slots;
    int nslots;
    int32_t *order;         /* requests in the order they finished (b->done of them) */
    uint8_t *refused;       /* per URL: an answer was not a clean 206; send no more */
    arena *arenas;          /* small bodies' memory (lsio_http_take_arena) */
    int narenas, caparenas;
    lsio_http_batch *prev_live, *next_live; /* the transport's live batches */
};

struct lsio_http {
    CURLM *multi;
    CURLSH *share;
    int epfd;
    long timer_ms;
    uint64_t timer_gen;
    uint64_t sent;
    CURL **pool;            /* easy handles kept for reuse */
    int npool, cappool;
    int64_t until;          /* when the running lsio_http_* call must give the loop back */
    int paused;             /* transfers paused for that (resumed by the next call) */
    lsio_http_batch *batches;
};

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* -- small parsers of untrusted header values ------------------------------------------ */

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    return p;
}

static const char *trim_end(const char *p, const char *end) {
    while (end > p && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    return end;
}

/* A decimal of at most 18 digits at p (no sign), -1 if none or too long. */
static int64_t parse_u63(const char **pp, const char *end) {
    const char *p = *pp;
    int64_t v = 0;
    int k = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (++k > 18) return -1;
        v = v * 10 + (*p - '0');
        p++;
    }
    if (k == 0) return -1;
    *pp = p;
    return v;
}

static int name_is(const char *line, size_t len, const char *name, const char **value) {
    size_t k = strlen(name);
    if (len <= k || strncasecmp(line, name, k) != 0 || line[k] != ':') return 0;
    *value = line + k + 1;
    return 1;
}

/* "bytes a-b/t" or "bytes a-b/(star)": s->cr_start, s->cr_end (exclusive), total (-1 for *).
 * Returns 0, or -1 if malformed. */
static int parse_content_range(const char *p, const char *end, slot *s, int64_t *total) {
    p = skip_ws(p, end);
    if (end - p < 6 || strncasecmp(p, "bytes", 5) != 0) return -1;
    p = skip_ws(p + 5, end);
    int64_t a = parse_u63(&p, end);
    if (a < 0 || p >= end || *p != '-') return -1;
    p++;
    int64_t b = parse_u63(&p, end);
    if (b < a || p >= end || *p != '/') return -1;
    p++;
    int64_t t;
    if (p < end && *p == '*') {
        t = -1;
        p++;
    } else {
        t = parse_u63(&p, end);
        if (t < 0 || b >= t) return -1;
    }
    if (skip_ws(p, end) != end) return -1;
    s->cr_start = a;
    s->cr_end = b + 1;
    *total = t;
    return 0;
}

/* Keep a header's value in dst (cap bytes with the NUL); a longer one is flagged and kept
 * empty. */
static void keep_value(char *dst, size_t cap, const char *p, const char *end,
                       lsio_http_req *r) {
    p = skip_ws(p, end);
    size_t n = (size_t)(end - p);
    if (n >= cap) {
        r->flags |= LSIO_HTTP_LONG_VALIDATOR;
        n = 0;
    }
    memcpy(dst, p, n);
    dst[n] = 0;
}

/* -- curl callbacks -------------------------------------------------------------------- */

/* Memory for a body of `len` bytes: in the batch's last arena (a new one when it is
 * full), or of its own for a big body (*which = -1); NULL if there is none. */
static char *body_memory(lsio_http_batch *b, int64_t len, int32_t *which) {
    *which = -1;
    if (len > LSIO_HTTP_ARENA_BODY) return malloc((size_t)len);
    int64_t need = (len + 63) & ~(int64_t)63;
    arena *a = b->narenas ? &b->arenas[b->narenas - 1] : NULL;
    if (a == NULL || a->used + need > LSIO_HTTP_ARENA) {
        if (b->narenas == b->caparenas) {
            int cap = b->caparenas ? 2 * b->caparenas : 8;
            arena *grown = realloc(b->arenas, (size_t)cap * sizeof *grown);
            if (grown == NULL) return NULL;
            b->arenas = grown;
            b->caparenas = cap;
        }
        char *base = NULL;
        if (posix_memalign((void **)&base, 64, LSIO_HTTP_ARENA) != 0) return NULL;
        a = &b->arenas[b->narenas++];
        a->base = base;
        a->used = 0;
        a->taken = 0;
        a->landing = 0;
    }
    char *p = a->base + a->used;
    a->used += need;
    a->landing++;
    *which = (int32_t)(a - b->arenas);
    return p;
}

/* A request with a body in an arena finished (or was cancelled): nothing more lands there. */
static void landed(lsio_http_batch *b, lsio_http_req *r) {
    if (r->arena >= 0 && r->arena < b->narenas) b->arenas[r->arena].landing--;
}

/* Let go of a request's body: memory of its own is freed, a place in an arena left. */
static void drop_body(lsio_http_req *r) {
    if (r->body != NULL && r->body != r->dest && r->arena < 0) free(r->body);
    r->body = NULL;
    r->arena = -1;
}

/* The end of an answer's headers: a 206 whose Content-Range is the range asked (or a
 * prefix of it ending at the object's end) goes on; anything else stops here. */
static int headers_end(slot *s) {
    lsio_http_req *r = &s->b->reqs[s->i];
    if (r->status >= 100 && r->status < 200) {  /* an interim answer: the real one follows */
        r->status = 0;
        s->at_start = 1;
        return 1;
    }
    s->headers_done = 1;
    if (r->status != 206) {
        r->flags |= LSIO_HTTP_NOT_PARTIAL;
        return 0;
    }
    if (s->cr_start != r->start || s->cr_end > r->start + r->length
        || (s->cr_end < r->start + r->length && r->total != s->cr_end)
        || (s->clen_seen != -2 && s->clen_seen != s->cr_end - s->cr_start)) {
        r->flags |= LSIO_HTTP_BAD_RANGE;
        return 0;
    }
    s->expect = s->cr_end - s->cr_start;
    if (r->dest == NULL) {  /* bounded by the length asked, never by the answer alone */
        r->body = body_memory(s->b, s->expect, &r->arena);
        if (r->body == NULL) {
            r->flags |= LSIO_HTTP_NOMEM;
            return 0;
        }
    } else {
        r->body = r->dest;
    }
    return 1;
}

static size_t on_header(char *line, size_t size, size_t nitems, void *userdata) {
    slot *s = userdata;
    lsio_http_req *r = &s->b->reqs[s->i];
    size_t len = size * nitems;
    if (len == 0) return 0;
    const char *end = trim_end(line, line + len);
    const char *v;
    if (s->headers_done) return len;  /* trailers after a chunked body: not looked at */
    if (s->at_start) {  /* an answer's first line: its status line */
        s->at_start = 0;
        if (len < 5 || strncmp(line, "HTTP/", 5) != 0) {
            r->flags |= LSIO_HTTP_BAD_RANGE;
            return 0;
        }
        const char *p = memchr(line, ' ', len);
        r->status = 0;
        if (p != NULL && end - p >= 4 && p[1] >= '1' && p[1] <= '5' && p[2] >= '0' &&
            p[2] <= '9' && p[3] >= '0' && p[3] <= '9')
            r->status = (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
        s->cr_start = s->cr_end = -1;
        s->clen_seen = -2;
        r->total = -1;
        r->content_length = -1;
        r->etag[0] = r->modified[0] = r->retry_after[0] = 0;
        return len;
    }
    if (line[0] == '\r' || line[0] == '\n')  /* the empty line: the headers end */
        return headers_end(s) ? len : 0;
    if (end == line) return len;  /* a line of blanks (an obsolete fold): nothing */
    if (name_is(line, (size_t)(end - line), "content-range", &v)) {
        if (s->cr_start != -1 || parse_content_range(v, end, s, &r->total) != 0) {
            r->flags |= LSIO_HTTP_BAD_RANGE;  /* malformed, or sent twice */
            return 0;
        }
    } else if (name_is(line, (size_t)(end - line), "content-length", &v)) {
        const char *p = skip_ws(v, end);
        int64_t n = parse_u63(&p, end);
        if (n < 0 || skip_ws(p, end) != end || (s->clen_seen != -2 && s->clen_seen != n)) {
            r->flags |= LSIO_HTTP_BAD_RANGE;
            return 0;
        }
        s->clen_seen = n;
        r->content_length = n;
    } else if (name_is(line, (size_t)(end - line), "etag", &v)) {
        keep_value(r->etag, sizeof r->etag, v, end, r);
    } else if (name_is(line, (size_t)(end - line), "last-modified", &v)) {
        keep_value(r->modified, sizeof r->modified, v, end, r);
    } else if (name_is(line, (size_t)(end - line), "retry-after", &v)) {
        keep_value(r->retry_after, sizeof r->retry_after, v, end, r);
    }
    return len;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata) {
    slot *s = userdata;
    lsio_http_req *r = &s->b->reqs[s->i];
    size_t len = size * nmemb;
    if (!s->headers_done || r->body == NULL) return 0;
    if ((int64_t)len > s->expect - r->got) {  /* more than announced: never past dest */
        r->flags |= LSIO_HTTP_OVERFLOW;
        return 0;
    }
    lsio_http *h = s->b->h;
    if (!s->paused && now_ns() > h->until) {  /* the loop's turn is over: land it later */
        s->paused = 1;
        h->paused++;
        return CURL_WRITEFUNC_PAUSE;
    }
    memcpy(r->body + r->got, data, len);
    r->got += (int64_t)len;
    return len;
}

static int on_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp) {
    (void)e;
    (void)socketp;
    lsio_http *h = userp;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(h->epfd, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.data.fd = fd;
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
    if (epoll_ctl(h->epfd, EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
        epoll_ctl(h->epfd, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

static int on_timer(CURLM *m, long timeout_ms, void *userp) {
    (void)m;
    lsio_http *h = userp;
    h->timer_ms = timeout_ms;
    h->timer_gen++;
    return 0;
}

/* -- the transport --------------------------------------------------------------------- */

int lsio_http_global_init(void) {
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

const char *lsio_http_strerror(int code) { return curl_easy_strerror((CURLcode)code); }

const char *lsio_http_version(void) { return curl_version(); }

lsio_http *lsio_http_new(long max_host_connections, int *err) {
    lsio_http *h = calloc(1, sizeof *h);
    if (h == NULL) {
        *err = ENOMEM;
        return NULL;
    }
    h->timer_ms = -1;
    h->epfd = epoll_create1(EPOLL_CLOEXEC);
    h->multi = curl_multi_init();
    h->share = curl_share_init();
    if (h->epfd < 0 || h->multi == NULL || h->share == NULL) {
        *err = h->epfd < 0 ? errno : ENOMEM;
        lsio_http_free(h);
        return NULL;
    }
    curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, max_host_connections);
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, max_host_connections * 4);
    curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
    return h;
}

int lsio_http_fd(lsio_http *h) { return h->epfd; }

uint64_t lsio_http_sent(lsio_http *h) { return h->sent; }

long lsio_http_timer(lsio_http *h, uint64_t *generation) {
    *generation = h->timer_gen;
    return h->timer_ms;
}

void lsio_http_free(lsio_http *h) {
    if (h == NULL) return;
    for (int i = 0; i < h->npool; i++) curl_easy_cleanup(h->pool[i]);
    free(h->pool);
    if (h->multi != NULL) curl_multi_cleanup(h->multi);
    if (h->share != NULL) curl_share_cleanup(h->share);
    if (h->epfd >= 0) close(h->epfd);
    free(h);
}

static CURL *easy_get(lsio_http *h) {
    if (h->npool > 0) return h->pool[--h->npool];
    CURL *e = curl_easy_init();
    if (e == NULL) return NULL;
    curl_easy_setopt(e, CURLOPT_SHARE, h->share);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_PROXY, "");  /* proxied URLs take the aiohttp path */
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);  /* redirects: the caller's, by hand */
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "lsio");
    return e;
}

static void easy_put(lsio_http *h, CURL *e) {
    if (h->npool == h->cappool) {
        int cap = h->cappool ? h->cappool * 2 : 64;
        CURL **p = realloc(h->pool, (size_t)cap * sizeof *p);
        if (p == NULL) {
            curl_easy_cleanup(e);
            return;
        }
        h->pool = p;
        h->cappool = cap;
    }
    h->pool[h->npool++] = e;
}

static char *dup_or_null(const char *s) { return s == NULL ? NULL : strdup(s); }

lsio_http_batch *lsio_http_batch_new(lsio_http *h, lsio_http_req *reqs, int n,
                                     char **urls, int nurls, char **headers, int nheaders,
                                     const lsio_http_sign *signs, const lsio_http_opts *opts,
                                     int concurrency) {
    lsio_http_batch *b = calloc(1, sizeof *b);
    if (b == NULL) return NULL;
    b->signs = signs;
    b->h = h;
    b->next_live = h->batches;  /* live: its paused transfers are resumed */
    if (h->batches) h->batches->prev_live = b;
    h->batches = b;
    b->reqs = reqs;
    b->n = n;
    b->urls = urls;
    b->nurls = nurls;
    b->opts = *opts;
    b->cainfo = dup_or_null(opts->cainfo);
    b->capath = dup_or_null(opts->capath);
    b->cert = dup_or_null(opts->cert);
    b->key = dup_or_null(opts->key);
    b->nslots = concurrency < 1 ? 1 : (concurrency < n ? concurrency : (n > 0 ? n : 1));
    b->slots = calloc((size_t)b->nslots, sizeof *b->slots);
    b->lists = calloc((size_t)(nheaders > 0 ? nheaders : 1), sizeof *b->lists);
    b->nlists = nheaders;
    b->order = malloc((size_t)(n > 0 ? n : 1) * sizeof *b->order);
    b->refused = calloc((size_t)(nurls > 0 ? nurls : 1), 1);
    if (b->slots == NULL || b->lists == NULL || b->order == NULL || b->refused == NULL)
        goto fail;
    for (int k = 0; k < b->nslots; k++) b->slots[k].i = -1;
    for (int k = 0; k < nheaders; k++) {  /* a block: header lines separated by '\n' */
        const char *p = headers[k];
        while (*p) {
            const char *e = strchr(p, '\n');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            char *line = strndup(p, len);
            struct curl_slist *l = line ? curl_slist_append(b->lists[k], line) : NULL;
            free(line);
            if (l == NULL) goto fail;
            b->lists[k] = l;
            p += len + (e ? 1 : 0);
        }
    }
    for (int i = 0; i < n; i++) {
        lsio_http_req *r = &reqs[i];
        r->flags = r->status = r->code = 0;
        r->got = 0;
        r->total = r->content_length = -1;
        r->body = NULL;
        r->arena = -1;
        r->etag[0] = r->modified[0] = r->retry_after[0] = 0;
        r->ttfb_us = r->total_us = 0;
    }
    return b;
fail:
    lsio_http_batch_free(b);
    return NULL;
}

static void hex(const unsigned char *in, int n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = 0;
}

/* The SigV4 signature (64 hex digits and a NUL in out) of the range "bytes=a-b" under s:
 * 0, or -1 (no memory, a failing digest, out too small). */
int lsio_http_sigv4(const lsio_http_sign *s, const char *range, char *out, int cap) {
    if (cap < 65 || s->key == NULL) return -1;
    size_t lp = strlen(s->pre), lr = strlen(range), lq = strlen(s->post);
    size_t ls = strlen(s->sts_prefix);
    size_t n = lp + 6 + lr + 1 + lq;
    char *buf = malloc((n > ls + 64 ? n : ls + 64) + 1);
    if (buf == NULL) return -1;
    memcpy(buf, s->pre, lp);
    memcpy(buf + lp, "range:", 6);
    memcpy(buf + lp + 6, range, lr);
    buf[lp + 6 + lr] = '\n';
    memcpy(buf + lp + 7 + lr, s->post, lq);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int ok = EVP_Digest(buf, n, md, &mdlen, EVP_sha256(), NULL) == 1 && mdlen == 32;
    if (ok) {  /* the string to sign: prefix + the canonical request's hash in hex */
        memcpy(buf, s->sts_prefix, ls);
        hex(md, 32, buf + ls);
        ok = HMAC(EVP_sha256(), s->key, 32, (unsigned char *)buf, ls + 64, md, &mdlen) != NULL
             && mdlen == 32;
    }
    free(buf);
    if (!ok) return -1;
    hex(md, 32, out);
    return 0;
}

/* The header list of a signed request: the block's lines, its Range and Authorization
 * (NULL if memory runs out). */
static struct curl_slist *signed_list(const struct curl_slist *base, const lsio_http_sign *s,
                                      const char *range) {
    char sig[65];
    if (lsio_http_sigv4(s, range, sig, sizeof sig) != 0) return NULL;
    struct curl_slist *l = NULL, *t;
    for (; base != NULL; base = base->next) {
        if ((t = curl_slist_append(l, base->data)) == NULL) goto fail;
        l = t;
    }
    size_t la = strlen(s->auth_prefix);
    char *line = malloc(la + 15 + 65 + 48);
    if (line == NULL) goto fail;
    snprintf(line, la + 15 + 65 + 48, "Range: %s", range);
    t = curl_slist_append(l, line);
    if (t != NULL) {
        l = t;
        memcpy(line, "Authorization: ", 15);
        memcpy(line + 15, s->auth_prefix, la);
        memcpy(line + 15 + la, sig, 65);
        t = curl_slist_append(l, line);
    }
    free(line);
    if (t == NULL) goto fail;
    return t;
fail:
    curl_slist_free_all(l);
    return NULL;
}

/* Put request b->next on the free slot s: 0, or -1 if curl refused it (it is then done,
 * with code CURLE_OUT_OF_MEMORY or the multi's refusal). */
static int launch(lsio_http_batch *b, slot *s) {
    lsio_http *h = b->h;
    int i = b->next++;
    lsio_http_req *r = &b->reqs[i];
    CURL *e = s->easy ? s->easy : easy_get(h);
    if (e == NULL || r->url < 0 || r->url >= b->nurls || r->headers >= b->nlists ||
        r->length < 1 || r->start < 0) {
        r->flags |= LSIO_HTTP_DONE;
        r->code = e == NULL ? CURLE_OUT_OF_MEMORY : CURLE_BAD_FUNCTION_ARGUMENT;
        b->order[b->done++] = i;
        s->easy = e;
        return -1;
    }
    s->easy = e;
    if (b->refused[r->url]) {  /* another request of this URL was answered otherwise */
        r->flags |= LSIO_HTTP_DONE | LSIO_HTTP_SKIPPED;
        b->order[b->done++] = i;
        return -1;
    }
    s->b = b;
    s->i = i;
    s->headers_done = 0;
    s->at_start = 1;
    s->cr_start = s->cr_end = -1;
    s->expect = 0;
    s->clen_seen = -2;
    snprintf(s->range, sizeof s->range, "%lld-%lld", (long long)r->start,
             (long long)(r->start + r->length - 1));
    struct curl_slist *list = r->headers >= 0 ? b->lists[r->headers] : NULL;
    const lsio_http_sign *sign = r->headers >= 0 && b->signs ? &b->signs[r->headers] : NULL;
    int own_range = r->own_range;
    if (sign != NULL && sign->key != NULL) {  /* signed here: its own list, Range included */
        char range[56];
        snprintf(range, sizeof range, "bytes=%s", s->range);
        s->own = signed_list(list, sign, range);
        if (s->own == NULL) {
            r->flags |= LSIO_HTTP_DONE | LSIO_HTTP_NOMEM;
            r->code = CURLE_OUT_OF_MEMORY;
            b->order[b->done++] = i;
            s->i = -1;
            return -1;
        }
        list = s->own;
        own_range = 1;
    }
    /* big bodies in big receives (fewer system calls and callbacks); the rest, size probes
     * included (most objects are smaller than the probe), in libcurl's default 16 KiB */
    long bufsize = r->length >= BIG_BODY && r->dest != NULL ? BIG_BUFFER : 16384L;
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, bufsize);
    curl_easy_setopt(e, CURLOPT_URL, b->urls[r->url]);
    curl_easy_setopt(e, CURLOPT_RANGE, own_range ? NULL : s->range);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(e, CURLOPT_PRIVATE, s);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, s);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, b->opts.timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, b->opts.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, b->opts.verify ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, b->opts.verify ? 2L : 0L);
    curl_easy_setopt(e, CURLOPT_CAINFO, b->cainfo);  /* NULL: libcurl's built-in default */
    curl_easy_setopt(e, CURLOPT_CAPATH, b->capath);
    curl_easy_setopt(e, CURLOPT_SSLCERT, b->cert);
    curl_easy_setopt(e, CURLOPT_SSLKEY, b->key);
    CURLMcode mc = curl_multi_add_handle(h->multi, e);
    if (mc != CURLM_OK) {
        curl_slist_free_all(s->own);
        s->own = NULL;
        r->flags |= LSIO_HTTP_DONE;
        r->code = CURLE_FAILED_INIT;
        b->order[b->done++] = i;
        s->i = -1;
        return -1;
    }
    b->active++;
    b->sent++;
    h->sent++;
    return 0;
}

/* Fill the batch's free slots with its next requests. */
static void refill(lsio_http_batch *b) {
    for (int k = 0; k < b->nslots && b->next < b->n && !b->cancelled; k++) {
        slot *s = &b->slots[k];
        while (s->i < 0 && b->next < b->n) launch(b, s);
    }
}

static void pump(lsio_http *h);
static void again(lsio_http *h);

int lsio_http_batch_start(lsio_http_batch *b) {
    lsio_http *h = b->h;
    h->until = now_ns() + DRIVE_BUDGET_NS;
    refill(b);
    h->timer_ms = 0;  /* the handles just added start now */
    pump(h);
    again(h);
    return b->n - b->done;
}

int lsio_http_batch_left(lsio_http_batch *b) { return b->n - b->done; }

int lsio_http_batch_sent(lsio_http_batch *b) { return b->sent; }

int lsio_http_batch_finished(lsio_http_batch *b, int32_t **order) {
    *order = b->order;
    return b->done;
}

static void unpause_slot(slot *s) {
    if (s->paused) {
        s->paused = 0;
        s->b->h->paused--;
    }
}

/* Let the transfers paused by an earlier call land their bodies again, while the time
 * lasts (one that runs out of it pauses again). */
static void resume(lsio_http *h) {
    for (lsio_http_batch *b = h->batches; b != NULL && h->paused > 0; b = b->next_live) {
        for (int k = 0; k < b->nslots && now_ns() < h->until; k++) {
            slot *s = &b->slots[k];
            if (s->i < 0 || !s->paused) continue;
            unpause_slot(s);
            curl_easy_pause(s->easy, CURLPAUSE_CONT);  /* may land data, or pause again */
        }
    }
}

static void finish(slot *s, CURLcode code) {
    lsio_http_batch *b = s->b;
    lsio_http_req *r = &b->reqs[s->i];
    curl_multi_remove_handle(b->h->multi, s->easy);
    curl_slist_free_all(s->own);
    s->own = NULL;
    unpause_slot(s);
    landed(b, r);
    r->code = (int32_t)code;
    r->flags |= LSIO_HTTP_DONE;
    curl_off_t t = 0;
    if (curl_easy_getinfo(s->easy, CURLINFO_STARTTRANSFER_TIME_T, &t) == CURLE_OK)
        r->ttfb_us = (int64_t)t;
    if (curl_easy_getinfo(s->easy, CURLINFO_TOTAL_TIME_T, &t) == CURLE_OK)
        r->total_us = (int64_t)t;
    if (code == CURLE_OK && r->status == 206 && s->headers_done && r->got == s->expect &&
        !(r->flags & LSIO_HTTP_LONG_VALIDATOR))
        r->flags |= LSIO_HTTP_OK;
    else {
        if (r->flags & LSIO_HTTP_NOT_PARTIAL) b->refused[r->url] = 1;
        drop_body(r);
    }
    b->order[b->done++] = s->i;
    s->i = -1;
    b->active--;
}

static void reap(lsio_http *h) {
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE) continue;
        slot *s = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
        if (s == NULL || s->i < 0) continue;
        lsio_http_batch *b = s->b;
        finish(s, msg->data.result);
        while (s->i < 0 && b->next < b->n && !b->cancelled) launch(b, s);
    }
}

/* Collect finished transfers, and while libcurl asks to be called again at once (a timeout
 * of 0: handles just added, or a transfer that stopped reading a busy socket to come back),
 * call it, until the time budget runs out (the loop's timer then calls again): a transfer
 * can finish inside any libcurl call (an answer already in the socket buffer), and then no
 * socket will ever wake the loop for it. */
static void pump(lsio_http *h) {
    int running;
    reap(h);
    for (int round = 0; round < DRIVE_ROUNDS && h->timer_ms == 0 && now_ns() < h->until;
         round++) {
        h->timer_ms = -1;
        curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        reap(h);
    }
}

/* Transfers left paused: ask the loop to call again at once (a timer of 0). */
static void again(lsio_http *h) {
    if (h->paused > 0 && h->timer_ms != 0) {
        h->timer_ms = 0;
        h->timer_gen++;
    }
}

int lsio_http_on_timer(lsio_http *h) {
    h->until = now_ns() + DRIVE_BUDGET_NS;
    resume(h);
    h->timer_ms = 0;
    pump(h);
    again(h);
    return 0;
}

int lsio_http_drive(lsio_http *h) {
    struct epoll_event ev[MAX_EVENTS];
    int total = 0, running;
    int64_t until = h->until = now_ns() + DRIVE_BUDGET_NS;
    resume(h);
    for (int round = 0; round < DRIVE_ROUNDS && now_ns() < until; round++) {
        int k = epoll_wait(h->epfd, ev, MAX_EVENTS, 0);
        if (k <= 0) break;
        int j = 0;
        for (; j < k; j++) {
            int mask = 0;
            if (ev[j].events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) mask |= CURL_CSELECT_IN;
            if (ev[j].events & EPOLLOUT) mask |= CURL_CSELECT_OUT;
            if (ev[j].events & EPOLLERR) mask |= CURL_CSELECT_ERR;
            curl_multi_socket_action(h->multi, ev[j].data.fd, mask, &running);
            if (now_ns() > until) {
                j++;
                break;
            }
        }
        total += j;
        pump(h);
        if (k < MAX_EVENTS || now_ns() > until) break;
    }
    again(h);
    return total;
}

void lsio_http_batch_cancel(lsio_http_batch *b) {
    b->cancelled = 1;
    for (int k = 0; k < b->nslots; k++) {
        slot *s = &b->slots[k];
        if (s->i < 0) continue;
        lsio_http_req *r = &b->reqs[s->i];
        curl_multi_remove_handle(b->h->multi, s->easy);
        curl_slist_free_all(s->own);
        s->own = NULL;
        unpause_slot(s);
        r->flags |= LSIO_HTTP_DONE | LSIO_HTTP_CANCELLED;
        landed(b, r);
        drop_body(r);
        b->order[b->done++] = s->i;
        s->i = -1;
        b->active--;
    }
    for (; b->next < b->n; b->next++) {
        b->reqs[b->next].flags |= LSIO_HTTP_DONE | LSIO_HTTP_CANCELLED;
        b->order[b->done++] = b->next;
    }
}

char *lsio_http_take_body(lsio_http_batch *b, int i) {
    if (i < 0 || i >= b->n) return NULL;
    lsio_http_req *r = &b->reqs[i];
    char *body = r->body;
    if (body == r->dest || r->arena >= 0) return NULL;
    r->body = NULL;
    return body;
}

int lsio_http_arena_busy(lsio_http_batch *b, int k) {
    if (k < 0 || k >= b->narenas) return 0;
    return k == b->narenas - 1 || b->arenas[k].landing > 0;
}

char *lsio_http_take_arena(lsio_http_batch *b, int k, int64_t *size) {
    if (k < 0 || k >= b->narenas || b->arenas[k].taken) return NULL;
    b->arenas[k].taken = 1;
    *size = LSIO_HTTP_ARENA;
    return b->arenas[k].base;
}

void lsio_http_free_body(char *body) { free(body); }

void lsio_http_batch_free(lsio_http_batch *b) {
    if (b == NULL) return;
    if (b->done < b->n && b->slots != NULL) lsio_http_batch_cancel(b);
    if (b->prev_live) b->prev_live->next_live = b->next_live;
    else if (b->h->batches == b) b->h->batches = b->next_live;
    if (b->next_live) b->next_live->prev_live = b->prev_live;
    for (int i = 0; i < b->n && b->reqs != NULL; i++) drop_body(&b->reqs[i]);
    for (int k = 0; k < b->narenas; k++)
        if (!b->arenas[k].taken) free(b->arenas[k].base);
    free(b->arenas);
    for (int k = 0; k < b->nslots && b->slots != NULL; k++)
        if (b->slots[k].easy != NULL) easy_put(b->h, b->slots[k].easy);
    for (int k = 0; k < b->nlists && b->lists != NULL; k++) curl_slist_free_all(b->lists[k]);
    free(b->lists);
    free(b->slots);
    free(b->order);
    free(b->refused);
    free(b->cainfo);
    free(b->capath);
    free(b->cert);
    free(b->key);
    free(b);
}
