/*
 * The load generator's receive path in C: one epoll thread per worker that
 * reads the WebSocket frames of every connection handed to it.
 *
 * Why: on the 2-core machine the load generator shares with the system under
 * test, reading 5,000 frames through uvloop and a Python protocol cost about
 * 7 us of CPU a frame (half of it Python), cycles the servers then lack. Here
 * a frame costs its recv() and a few comparisons: the thread stamps each read
 * with CLOCK_MONOTONIC (the clock of time.monotonic_ns()) and appends the
 * frame to a buffer, and the worker's Python parses the buffer later, when
 * the burst is over. Latency is the read's stamp, not the parse's.
 *
 * The thread runs without the GIL (ctypes releases it around every call, and
 * the thread never calls into Python). It never writes: every frame (text,
 * binary, fragments, pings, close frames) and the end of a stream is recorded
 * for Python, which owns the connection, answers pings through its transport
 * (so that a pong never lands inside a frame uvloop is still writing) and
 * closes it.
 *
 * Record: u32 id, u8 kind, 3 pad, u32 length, u64 t_ns, then the payload.
 * kinds: 0 final data frame, 3 non-final fragment, 4 ping, 1 close frame,
 * 2 end of stream, read error or a frame too long to be one (the connection
 * is no longer read after 1 or 2). A failed epoll_wait ends the thread and
 * is reported by fr_status.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STOP_ID 0xFFFFFFFFu
#define HEAD 20
#define MAX_FRAME (1u << 30)

typedef struct {
    int fd;
    int active;
    uint8_t *carry; /* an incomplete frame left over from the last read */
    size_t carry_len, carry_cap;
} conn_t;

static conn_t *conns;
static size_t conns_cap;
static int ep = -1, stop_fd = -1;
static pthread_t thread;
static int running;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *bufs[2];
static size_t lens[2], caps[2];
static int cur;
static uint64_t pending, last_ns, first_ns;
static int urgent;
static uint64_t nap_ns = 200000;
static int failed; /* errno of an epoll_wait that ended the thread */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int reserve(uint8_t **p, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 1 << 16;
    while (n < need) n *= 2;
    uint8_t *q = realloc(*p, n);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

/* Under mu. */
static void record(uint32_t id, uint8_t kind, const uint8_t *data, uint32_t len, uint64_t t) {
    size_t at = lens[cur];
    if (reserve(&bufs[cur], &caps[cur], at + HEAD + len) < 0) abort();
    uint8_t *p = bufs[cur] + at;
    memcpy(p, &id, 4);
    p[4] = kind;
    p[5] = p[6] = p[7] = 0;
    memcpy(p + 8, &len, 4);
    memcpy(p + 12, &t, 8);
    if (len) memcpy(p + HEAD, data, len);
    lens[cur] = at + HEAD + len;
    if (!pending) first_ns = t;
    pending++;
    if (kind == 1 || kind == 2) urgent = 1;
}

/* Under mu. */
static void drop(uint32_t id) {
    conn_t *c = &conns[id];
    if (!c->active) return;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    c->active = 0;
    free(c->carry);
    c->carry = NULL;
    c->carry_len = c->carry_cap = 0;
}

/* Parse whole frames from data; return how many bytes were consumed. Under mu. */
static size_t frames(uint32_t id, const uint8_t *d, size_t n, uint64_t t) {
    size_t pos = 0;
    while (pos + 2 <= n) {
        uint8_t b0 = d[pos];
        uint64_t len = d[pos + 1] & 0x7F;
        size_t hl = 2;
        if (len == 126) {
            if (pos + 4 > n) break;
            len = ((uint64_t)d[pos + 2] << 8) | d[pos + 3];
            hl = 4;
        } else if (len == 127) {
            if (pos + 10 > n) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | d[pos + 2 + i];
            hl = 10;
        }
        if (d[pos + 1] & 0x80) hl += 4; /* a server never masks; skip a key if one did */
        if (len > MAX_FRAME) { /* no chat frame is this long: a broken stream */
            record(id, 2, NULL, 0, t);
            drop(id);
            return n;
        }
        if (hl > n - pos || len > n - pos - hl) break; /* the rest has not come yet */
        const uint8_t *payload = d + pos + hl;
        pos += hl + len;
        uint8_t op = b0 & 0x0F;
        if (op == 9) {
            record(id, 4, payload, (uint32_t)len, t); /* Python answers: it owns the writes */
        } else if (op == 10) {
            continue;
        } else if (op == 8) {
            record(id, 1, payload, (uint32_t)len, t);
            drop(id);
            return n; /* nothing after a close frame counts */
        } else {
            record(id, (b0 & 0x80) ? 0 : 3, payload, (uint32_t)len, t);
        }
    }
    return pos;
}

static void on_readable(uint32_t id, uint8_t *rbuf, size_t rcap) {
    if (id >= conns_cap || !conns[id].active) return;
    conn_t *c = &conns[id];
    ssize_t r = recv(c->fd, rbuf, rcap, MSG_DONTWAIT);
    uint64_t t = now_ns();
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (r <= 0) {
        record(id, 2, NULL, 0, t);
        drop(id);
        return;
    }
    last_ns = t;
    if (c->carry_len == 0) {
        size_t used = frames(id, rbuf, (size_t)r, t);
        if (c->active && used < (size_t)r) {
            if (reserve(&c->carry, &c->carry_cap, (size_t)r - used) < 0) abort();
            memcpy(c->carry, rbuf + used, (size_t)r - used);
            c->carry_len = (size_t)r - used;
        }
        return;
    }
    if (reserve(&c->carry, &c->carry_cap, c->carry_len + (size_t)r) < 0) abort();
    memcpy(c->carry + c->carry_len, rbuf, (size_t)r);
    c->carry_len += (size_t)r;
    size_t used = frames(id, c->carry, c->carry_len, t);
    if (!c->active) return;
    memmove(c->carry, c->carry + used, c->carry_len - used);
    c->carry_len -= used;
}

static void *run(void *arg) {
    (void)arg;
    static uint8_t rbuf[1 << 18];
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            pthread_mutex_lock(&mu);
            failed = errno;
            pthread_mutex_unlock(&mu);
            return NULL;
        }
        pthread_mutex_lock(&mu);
        for (int i = 0; i < n; i++) {
            uint32_t id = evs[i].data.u32;
            if (id == STOP_ID) {
                pthread_mutex_unlock(&mu);
                return NULL;
            }
            on_readable(id, rbuf, sizeof rbuf);
        }
        pthread_mutex_unlock(&mu);
        if (n < 64 && nap_ns) {
            /* Few sockets were ready: let more become ready before looking again.
             * While this thread is not waiting in epoll_wait, a server's write
             * wakes nobody; without the nap every frame of a burst cost a
             * sleep and a wake-up (an IPI on a VM), more than its read. */
            struct timespec ts = {0, (long)nap_ns};
            nanosleep(&ts, NULL);
        }
    }
}

int fr_start(uint64_t nap) {
    if (running) return 0;
    nap_ns = nap;
    ep = epoll_create1(EPOLL_CLOEXEC);
    stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ep < 0 || stop_fd < 0) return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = STOP_ID};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, stop_fd, &ev) < 0) return -1;
    /* Touch both record buffers now: their pages faulted in during the first
     * bursts otherwise, on the cores the servers are writing with. */
    for (int i = 0; i < 2; i++) {
        if (reserve(&bufs[i], &caps[i], 1 << 20) < 0) return -1;
        memset(bufs[i], 0, caps[i]);
    }
    if (pthread_create(&thread, NULL, run, NULL) != 0) return -1;
    running = 1;
    return 0;
}

/* Read fd as connection id from now on; carry = bytes already read past the last whole frame. */
int fr_add(uint32_t id, int fd, const uint8_t *carry, size_t carry_len) {
    pthread_mutex_lock(&mu);
    int rc = 0;
    if (id >= conns_cap) {
        size_t n = conns_cap ? conns_cap : 1024;
        while (n <= id) n *= 2;
        conn_t *q = realloc(conns, n * sizeof *q);
        if (!q) {
            pthread_mutex_unlock(&mu);
            return -1;
        }
        memset(q + conns_cap, 0, (n - conns_cap) * sizeof *q);
        conns = q;
        conns_cap = n;
    }
    drop(id);
    conn_t *c = &conns[id];
    c->fd = fd;
    c->active = 1;
    if (carry_len) {
        uint64_t t = now_ns();
        size_t used = frames(id, carry, carry_len, t);
        if (c->active && used < carry_len) {
            if (reserve(&c->carry, &c->carry_cap, carry_len - used) < 0) abort();
            memcpy(c->carry, carry + used, carry_len - used);
            c->carry_len = carry_len - used;
        }
    }
    if (c->active) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = id};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            free(c->carry);
            c->carry = NULL;
            c->carry_len = c->carry_cap = 0;
            c->active = 0;
            rc = -1;
        }
    }
    pthread_mutex_unlock(&mu);
    return rc;
}

/* Stop reading a connection (before Python closes its socket). */
void fr_remove(uint32_t id) {
    pthread_mutex_lock(&mu);
    if (id < conns_cap) drop(id);
    pthread_mutex_unlock(&mu);
}

/* status[0] records pending, [1] stamp of the last read with data, [2] stamp of the
 * oldest pending record, [3] 1 if a close or end of stream is pending, [4] the errno
 * that stopped the thread (0 while it reads). */
void fr_status(uint64_t *status) {
    pthread_mutex_lock(&mu);
    status[0] = pending;
    status[1] = last_ns;
    status[2] = first_ns;
    status[3] = (uint64_t)urgent;
    status[4] = (uint64_t)failed;
    pthread_mutex_unlock(&mu);
}

/* Hand the filled buffer to the caller and start the other: valid until the next drain. */
size_t fr_drain(const uint8_t **out) {
    pthread_mutex_lock(&mu);
    int was = cur;
    size_t n = lens[was];
    *out = bufs[was];
    cur ^= 1;
    lens[cur] = 0;
    pending = 0;
    urgent = 0;
    pthread_mutex_unlock(&mu);
    return n;
}

void fr_stop(void) {
    if (!running) return;
    uint64_t one = 1;
    (void)write(stop_fd, &one, sizeof one);
    pthread_join(thread, NULL);
    running = 0;
    for (size_t i = 0; i < conns_cap; i++) drop((uint32_t)i);
    failed = 0;
    close(ep);
    close(stop_fd);
    ep = stop_fd = -1;
    lens[0] = lens[1] = 0;
    pending = 0;
    urgent = 0;
}
