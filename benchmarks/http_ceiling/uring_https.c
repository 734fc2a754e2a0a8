/* uring_https: uring_http over TLS. The sockets stay on io_uring; OpenSSL only sees memory.
 *
 *   uring_https HOST PORT PATHS_FILE [CONNECTIONS=64] [ROUNDS=5] --https CAFILE [--slot BYTES]
 *               [--verify ROOT] [--warmup ROUNDS] [--copy]
 *
 * The same requests, rounds, counting and output as uring_http. Each connection has an SSL object
 * whose two BIOs are one end of a BIO pair (BIO_new_bio_pair); the program holds the other end.
 * Ciphertext the SSL object writes is sent from the pair's buffer with an io_uring SEND
 * (BIO_nread0, no copy); ciphertext is received with an io_uring RECV straight into the pair's
 * buffer (BIO_nwrite0, no copy), and SSL_read decrypts from there into the header buffer or the
 * request's slot. With --copy, RECV lands in a per-connection buffer and BIO_write copies it into
 * the pair, which is what a client on BIO_s_mem pays.
 *
 * The peer's certificate is verified against CAFILE (SSL_VERIFY_PEER), and its name against HOST:
 * an IP address (X509_VERIFY_PARAM_set1_ip_asc) or a host name (SSL_set1_host, and SNI). The
 * handshakes run inside the first warm-up round, as the first SSL_write of each connection drives
 * them; measured rounds reuse the connections (keep-alive), so they hold no handshake.
 *
 * One rule keeps the buffers safe: no SSL call on a connection while its RECV is in flight, since
 * the kernel is writing into the pair's buffer past what SSL may read.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "http1.h"

#define RBUF 16384          /* plaintext header buffer */
#ifndef CBUF               /* -DCBUF=BYTES to try others: 20 KiB and 256 KiB measured the same */
#define CBUF (64 * 1024)    /* ciphertext per direction: the pair's buffers, and --copy's */
#endif
#define OP_SEND 0u
#define OP_RECV 1u

typedef struct {
    int fd;
    SSL *ssl;
    BIO *net;            /* the program's end of the BIO pair */
    char *cin;           /* --copy: where RECV lands */
    char *recv_at;       /* where the RECV in flight writes */
    int send_busy, recv_busy;
    int req;             /* request in flight, -1: idle */
    char out[1200];      /* the request, plaintext */
    int out_len, out_written;
    char *in;            /* header buffer, plaintext */
    int in_len;
    int headers_done;
    int64_t body_len, body_got;
} conn;

typedef struct {
    char **paths;
    int n;
    size_t slot;
    char *out;           /* n * slot */
    int64_t *got;        /* body bytes per request, -1: failed */
    int next, done;
    const char *host;
    int copy;
    struct io_uring ring;
    conn *conns;
    int nconns;
    long submits;
} bench;

static void fail(bench *b, int k, const char *why) {
    conn *c = &b->conns[k];
    fprintf(stderr, "request %d (%s): %s\n", c->req, c->req >= 0 ? b->paths[c->req] : "-", why);
    ERR_print_errors_fp(stderr);
    exit(3);
}

static struct io_uring_sqe *sqe_get(bench *b) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
    if (sqe == NULL) {  /* the SQ ring is full: flush it */
        io_uring_submit(&b->ring);
        b->submits++;
        sqe = io_uring_get_sqe(&b->ring);
        if (sqe == NULL) die("io_uring_get_sqe");
    }
    return sqe;
}

/* Send the ciphertext waiting in the pair, if any and no SEND is in flight; with want_recv, also
 * arm a RECV if none is in flight, linked after the SEND when there is one. */
static void flush(bench *b, int k, int want_recv) {
    conn *c = &b->conns[k];
    struct io_uring_sqe *sqe = NULL;
    int linked = 0;
    if (!c->send_busy) {
        char *p;
        int n = BIO_nread0(c->net, &p);
        if (n > 0) {
            sqe = sqe_get(b);
            io_uring_prep_send(sqe, c->fd, p, (size_t)n, MSG_NOSIGNAL);
            io_uring_sqe_set_data64(sqe, ((uint64_t)k << 1) | OP_SEND);
            c->send_busy = 1;
            linked = 1;
        }
    }
    if (!want_recv || c->recv_busy) return;
    if (linked) sqe->flags |= IOSQE_IO_LINK;
    char *p;
    int room;
    if (b->copy) {
        p = c->cin;
        room = (int)BIO_ctrl_get_write_guarantee(c->net);  /* what BIO_write will take */
        if (room > CBUF) room = CBUF;
        if (room <= 0) fail(b, k, "ciphertext buffer full");
    } else {
        room = BIO_nwrite0(c->net, &p);
        if (room <= 0) fail(b, k, "ciphertext buffer full");
    }
    sqe = sqe_get(b);
    io_uring_prep_recv(sqe, c->fd, p, (size_t)room, 0);
    io_uring_sqe_set_data64(sqe, ((uint64_t)k << 1) | OP_RECV);
    c->recv_at = p;
    c->recv_busy = 1;
}

static void start_next(bench *b, int k) {
    conn *c = &b->conns[k];
    if (b->next >= b->n) {
        c->req = -1;
        return;
    }
    c->req = b->next++;
    c->out_len = snprintf(c->out, sizeof c->out,
                          "GET %s HTTP/1.1\r\nHost: %s\r\nRange: bytes=0-1048575\r\n\r\n",
                          b->paths[c->req], b->host);
    c->out_written = 0;
    c->in_len = 0;
    c->headers_done = 0;
    c->body_len = -1;
    c->body_got = 0;
}

static void ssl_fail(bench *b, int k, int ret, const char *what) {
    conn *c = &b->conns[k];
    char why[256];
    long v = SSL_get_verify_result(c->ssl);
    snprintf(why, sizeof why, "%s: SSL error %d%s%s", what, SSL_get_error(c->ssl, ret),
             v != X509_V_OK ? ", certificate: " : "",
             v != X509_V_OK ? X509_verify_cert_error_string(v) : "");
    fail(b, k, why);
}

/* Run connection k's SSL as far as the bytes in the pair allow: write the request (which drives
 * the handshake on first use), read the response into the header buffer and then the slot,
 * complete it and start the next; then send what SSL wrote and arm a RECV. Only called with no
 * RECV in flight. */
static void pump(bench *b, int k) {
    conn *c = &b->conns[k];
    while (c->req >= 0) {
        if (!c->out_written) {
            size_t w;
            int r = SSL_write_ex(c->ssl, c->out, (size_t)c->out_len, &w);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                    ssl_fail(b, k, r, "SSL_write");
                break;  /* the handshake needs the peer: wait for bytes */
            }
            c->out_written = 1;  /* whole: SSL_MODE_ENABLE_PARTIAL_WRITE is off */
        }
        char *dst;
        size_t room, got;
        if (!c->headers_done) {
            dst = c->in + c->in_len;
            room = (size_t)(RBUF - 1 - c->in_len);
        } else {
            dst = b->out + (size_t)c->req * b->slot + c->body_got;
            room = (size_t)(c->body_len - c->body_got);
        }
        int r = SSL_read_ex(c->ssl, dst, room, &got);
        if (r <= 0) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ) break;
            if (e == SSL_ERROR_ZERO_RETURN) fail(b, k, "connection closed (TLS close_notify)");
            ssl_fail(b, k, r, "SSL_read");
        }
        if (!c->headers_done) {
            c->in_len += (int)got;
            const char *why = NULL;
            int body_off;
            int h = parse_head(c->in, c->in_len, RBUF, b->slot, &c->body_len, &body_off, &why);
            if (h < 0) fail(b, k, why);
            if (h == 0) continue;
            c->headers_done = 1;
            c->body_got = c->in_len - body_off;
            memcpy(b->out + (size_t)c->req * b->slot, c->in + body_off, (size_t)c->body_got);
        } else {
            c->body_got += (int64_t)got;
        }
        if (c->body_got == c->body_len) {
            b->got[c->req] = c->body_got;
            b->done++;
            start_next(b, k);
        }
    }
    flush(b, k, c->req >= 0);
}

static void on_cqe(bench *b, struct io_uring_cqe *cqe) {
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    int k = (int)(ud >> 1);
    conn *c = &b->conns[k];
    int res = cqe->res;
    if ((ud & 1) == OP_SEND) {
        c->send_busy = 0;
        if (res < 0) fail(b, k, strerror(-res));
        char *p;
        BIO_nread(c->net, &p, res);  /* consume what went out */
        /* a short SEND cancels its linked RECV, whose CQE comes next and re-arms it */
        if (c->recv_busy) flush(b, k, 0);
        else pump(b, k);
        return;
    }
    c->recv_busy = 0;
    if (res == -ECANCELED) { flush(b, k, c->req >= 0); return; }
    if (res < 0) fail(b, k, strerror(-res));
    if (res == 0) fail(b, k, "connection closed");
    if (b->copy) {
        if (BIO_write(c->net, c->cin, res) != res) fail(b, k, "BIO_write short");
    } else {
        char *p;
        if (BIO_nwrite(c->net, &p, res) != res || p != c->recv_at) fail(b, k, "BIO_nwrite");
    }
    pump(b, k);
}

static void run_round(bench *b) {
    b->next = b->done = 0;
    for (int k = 0; k < b->nconns; k++) {
        start_next(b, k);
        pump(b, k);
    }
    struct io_uring_cqe *cqes[256];
    while (b->done < b->n) {
        int r = io_uring_submit_and_wait(&b->ring, 1);
        b->submits++;
        if (r < 0 && r != -EINTR) { errno = -r; die("io_uring_submit_and_wait"); }
        unsigned got;
        while ((got = io_uring_peek_batch_cqe(&b->ring, cqes, 256)) > 0) {
            for (unsigned j = 0; j < got; j++) on_cqe(b, cqes[j]);
            io_uring_cq_advance(&b->ring, got);
        }
    }
}

static SSL_CTX *make_ctx(const char *cafile) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) die("SSL_CTX_new");
    if (SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) {
        ERR_print_errors_fp(stderr);
        fprintf(stderr, "cannot load %s\n", cafile);
        exit(2);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    return ctx;
}

static void setup_tls(bench *b, SSL_CTX *ctx, conn *c) {
    c->ssl = SSL_new(ctx);
    BIO *inner;
    if (c->ssl == NULL || BIO_new_bio_pair(&inner, CBUF, &c->net, CBUF) != 1) die("SSL_new");
    SSL_set_bio(c->ssl, inner, inner);
    SSL_set_connect_state(c->ssl);
    unsigned char addr[16];
    if (inet_pton(AF_INET, b->host, addr) == 1 || inet_pton(AF_INET6, b->host, addr) == 1) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), b->host) != 1) die("ip");
    } else if (SSL_set1_host(c->ssl, b->host) != 1 ||
               SSL_set_tlsext_host_name(c->ssl, b->host) != 1) {
        die("SSL_set1_host");
    }
    if (b->copy && (c->cin = malloc(CBUF)) == NULL) die("malloc");
}

int main(int argc, char **argv) {
    const char *pos[5] = {0};
    int npos = 0, warmup = 1, copy = 0;
    size_t slot = 4096;
    const char *verify_root = NULL, *cafile = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--slot") == 0 && i + 1 < argc) slot = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--verify") == 0 && i + 1 < argc) verify_root = argv[++i];
        else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc) warmup = atoi(argv[++i]);
        else if (strcmp(argv[i], "--https") == 0 && i + 1 < argc) cafile = argv[++i];
        else if (strcmp(argv[i], "--copy") == 0) copy = 1;
        else if (npos < 5) pos[npos++] = argv[i];
    }
    if (npos < 3 || cafile == NULL || warmup < 1) {
        fprintf(stderr, "usage: %s HOST PORT PATHS [CONNECTIONS] [ROUNDS] --https CAFILE "
                        "[--slot B] [--verify ROOT] [--warmup R>=1] [--copy]\n", argv[0]);
        return 1;
    }
    bench b;
    memset(&b, 0, sizeof b);
    b.host = pos[0];
    b.copy = copy;
    b.paths = read_lines(pos[2], &b.n);
    b.nconns = npos > 3 ? atoi(pos[3]) : 64;
    int rounds = npos > 4 ? atoi(pos[4]) : 5;
    if (b.nconns > b.n) b.nconns = b.n;
    b.slot = slot;
    b.out = malloc((size_t)b.n * slot);
    b.got = malloc((size_t)b.n * sizeof *b.got);
    b.conns = calloc((size_t)b.nconns, sizeof *b.conns);
    if (b.out == NULL || b.got == NULL || b.conns == NULL) die("malloc");
    memset(b.out, 0, (size_t)b.n * slot);  /* fault the pages in before timing */

    ring_init(&b.ring, 2 * (unsigned)b.nconns + 8);
    SSL_CTX *ctx = make_ctx(cafile);
    for (int k = 0; k < b.nconns; k++) {
        b.conns[k].fd = connect_to(pos[0], pos[1]);
        b.conns[k].in = malloc(RBUF);
        if (b.conns[k].in == NULL) die("malloc");
        setup_tls(&b, ctx, &b.conns[k]);
    }
    for (int w = 0; w < warmup; w++) run_round(&b);  /* the handshakes happen in the first */
    for (int k = 0; k < b.nconns; k++) {
        if (!SSL_is_init_finished(b.conns[k].ssl) ||
            SSL_get_verify_result(b.conns[k].ssl) != X509_V_OK) {
            fprintf(stderr, "connection %d: handshake not done or not verified\n", k);
            return 3;
        }
    }
    const char *proto = SSL_get_version(b.conns[0].ssl);
    const char *cipher = SSL_get_cipher_name(b.conns[0].ssl);
    for (int round = 0; round < rounds; round++) {
        memset(b.got, 0xff, (size_t)b.n * sizeof *b.got);
        long submits0 = b.submits;
        double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
        run_round(&b);
        double w1 = now(CLOCK_MONOTONIC), c1 = now(CLOCK_PROCESS_CPUTIME_ID);
        int64_t bytes = 0;
        for (int i = 0; i < b.n; i++) bytes += b.got[i];
        int bad = verify_root
            ? verify_slots(b.n, b.paths, b.slot, b.out, b.got, verify_root) : 0;
        printf("{\"impl\": \"%s\", \"round\": %d, \"n\": %d, \"connections\": %d, "
               "\"wall_s\": %.6f, \"cpu_s\": %.6f, \"rps\": %.1f, \"cpu_us_per_req\": %.3f, "
               "\"bytes\": %ld, \"submits\": %ld, \"verify_bad\": %d, \"tls\": \"%s %s\"}\n",
               copy ? "io_uring_https_copy" : "io_uring_https", round, b.n, b.nconns, w1 - w0,
               c1 - c0, b.n / (w1 - w0), (c1 - c0) * 1e6 / b.n, (long)bytes,
               b.submits - submits0, bad, proto, cipher);
        fflush(stdout);
        if (bad) return 4;
    }
    for (int k = 0; k < b.nconns; k++) {
        SSL_free(b.conns[k].ssl);  /* frees the inner BIO too */
        BIO_free(b.conns[k].net);
        close(b.conns[k].fd);
    }
    SSL_CTX_free(ctx);
    io_uring_queue_exit(&b.ring);
    return 0;
}
