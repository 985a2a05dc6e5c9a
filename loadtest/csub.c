/* csub: the load generator's SSE subscribers in C, one epoll loop per process.
 *
 * Why: a Python asyncio subscriber costs a few microseconds per received chunk, so one
 * core reads 100k-300k events/s, less than the node delivers. This loop does the same
 * bookkeeping (latency, gaps, duplicates, Last-Event-ID) for a small fraction of that,
 * so that the kernel's cost of a read dominates. loadtest/csub.py compiles it at run
 * time and drives it.
 *
 * Commands, one per line on stdin (tokens separated by one space); replies on stdout:
 *   sub SOURCE IP PORT HOST PATH CHANNEL...   declare a subscriber (no reply)
 *   connect CONCURRENCY TIMEOUT_S   connect all unconnected -> "HELD FAILED SECONDS"
 *   disconnect                      hang up on all -> "HELD"
 *   stats [CHANNEL N]...            counts since the last stats, then clears them ->
 *       "EVENTS UNPARSED GAPS DUPLICATES ERRORS DROPPED HELD BEHIND_SUBS BEHIND_EVENTS NLAT"
 *       followed by NLAT native float64 latencies in seconds
 *   wait TIMEOUT_S [CHANNEL N]...   until no subscriber is behind N on CHANNEL, or timeout
 *       -> "CAUGHT_UP AT BEHIND_SUBS BEHIND_EVENTS" (AT: wall-clock seconds)
 * End of stdin ends the process.
 *
 * Event data is "<seq> <publish time ns> <channel>[ padding]" (loadtest/publisher.py);
 * sequences count from 1 per channel, so a subscriber that has seen nothing is at 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24 /* linux/in.h; older libc headers lack it */
#endif

#define ATTEMPTS 3            /* connection attempts per subscriber, as worker.py */
#define MAX_HEAD 65536        /* a longer response head is an error, as sse_client.py */
#define READ_SIZE (256 << 10) /* at most this much per read, one read per wake-up */
#define TICK_NS 2000000       /* stdin, connect timeouts and `wait`: checked every 2 ms */
#define STDIN_TAG UINT64_MAX  /* epoll tag of stdin; a subscriber's tag is its index */

typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

typedef struct {
    uint32_t chan;    /* index into the channel table */
    int64_t last_seq; /* highest sequence seen on that channel */
} seen_t;

enum state { S_IDLE, S_BACKOFF, S_CONNECTING, S_HEAD, S_BODY };
/* The chunked decoder: size digits, extension, CRLF, data, CRLF; END after "0". */
enum chunk { K_SIZE, K_EXT, K_SIZE_LF, K_DATA, K_DATA_CR, K_DATA_LF, K_END };

typedef struct {
    int fd;
    uint8_t state, chunk, attempt;
    bool chunked;
    bool cr;       /* the last line ended in CR: a LF right after it belongs to it */
    bool has_data; /* the event being read has a data field */
    bool has_id;   /* ... and an id field */
    uint32_t flight;    /* position in op.flight while connecting */
    int64_t deadline;   /* end of this attempt, or of the pause before the next one */
    uint64_t left;      /* bytes left in the current chunk */
    int chunk_digits;
    struct sockaddr_in source, server;
    char *host, *path;
    uint32_t nchan, nseen; /* seen[0..nchan) are the subscribed channels; others follow */
    seen_t *seen;
    buf_t head, line, data, id, last_id;
} sub_t;

static sub_t *subs;
static uint32_t nsubs, capsubs, held;
static int ep;
static char rbuf[READ_SIZE];

static struct {
    int64_t events, unparsed, gaps, duplicates, errors, dropped;
} st;
static double *lat;
static size_t nlat, caplat;

/* Channel names, interned so that subscribers and `expected` refer to them by index. */
static struct {
    char **name;
    size_t *len;
    int64_t *expected;
    uint32_t n, cap, *slot, nslot; /* open addressing: slot holds index + 1, 0 is free */
} ch;

static struct {
    bool active;
    int concurrency;
    int64_t timeout, started;
    uint32_t *queue, nqueue, next; /* the subscribers to connect, and how far we are */
    uint32_t *flight, nflight;     /* the ones between first attempt and outcome */
    int64_t failed;
} op;

static struct {
    bool active;
    int64_t deadline;
} wt;

static buf_t in; /* stdin not run yet */
static size_t in_off;
static int64_t last_tick;

static void die(const char *what) {
    fprintf(stderr, "csub: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void *grow(void *p, size_t size) {
    p = realloc(p, size);
    if (!p) die("out of memory");
    return p;
}

static void put(buf_t *b, const char *p, size_t n) {
    if (!n) return; /* b->p may still be NULL */
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 128;
        while (cap < b->len + n) cap *= 2;
        b->p = grow(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static int64_t clock_ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void write_all(const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = write(STDOUT_FILENO, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die("stdout");
        c += w;
        n -= (size_t)w;
    }
}

static void reply(const char *fmt, ...) {
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    write_all(line, (size_t)n);
}

/* -- channels ---------------------------------------------------------------------- */

static uint32_t hash(const char *p, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    while (n--) h = (h ^ (uint8_t)*p++) * 16777619u;
    return h;
}

static void rehash(void) {
    ch.nslot = ch.nslot ? ch.nslot * 2 : 64;
    free(ch.slot);
    ch.slot = calloc(ch.nslot, sizeof *ch.slot);
    if (!ch.slot) die("out of memory");
    for (uint32_t c = 0; c < ch.n; c++) {
        uint32_t i = hash(ch.name[c], ch.len[c]) & (ch.nslot - 1);
        while (ch.slot[i]) i = (i + 1) & (ch.nslot - 1);
        ch.slot[i] = c + 1;
    }
}

static uint32_t channel(const char *p, size_t n) {
    if (2 * (ch.n + 1) > ch.nslot) rehash();
    uint32_t i = hash(p, n) & (ch.nslot - 1);
    for (; ch.slot[i]; i = (i + 1) & (ch.nslot - 1)) {
        uint32_t c = ch.slot[i] - 1;
        if (ch.len[c] == n && memcmp(ch.name[c], p, n) == 0) return c;
    }
    if (ch.n == ch.cap) {
        ch.cap = ch.cap ? ch.cap * 2 : 64;
        ch.name = grow(ch.name, ch.cap * sizeof *ch.name);
        ch.len = grow(ch.len, ch.cap * sizeof *ch.len);
        ch.expected = grow(ch.expected, ch.cap * sizeof *ch.expected);
    }
    ch.name[ch.n] = grow(NULL, n + 1);
    memcpy(ch.name[ch.n], p, n);
    ch.len[ch.n] = n;
    ch.expected[ch.n] = 0;
    ch.slot[i] = ch.n + 1;
    return ch.n++;
}

static seen_t *seen_of(sub_t *s, uint32_t c) {
    for (uint32_t i = 0; i < s->nseen; i++)
        if (s->seen[i].chan == c) return &s->seen[i];
    return NULL;
}

/* -- events ------------------------------------------------------------------------ */

/* Digits up to the next space; false when there are none or they do not end in one. */
static bool number(const char **p, const char *end, int64_t *out) {
    const char *c = *p;
    uint64_t v = 0; /* 19 digits fit; a nanosecond time has 19 */
    while (c < end && c - *p < 19 && *c >= '0' && *c <= '9') v = v * 10 + (uint64_t)(*c++ - '0');
    if (c == *p || c == end || *c != ' ' || v > INT64_MAX) return false;
    *out = (int64_t)v;
    *p = c + 1;
    return true;
}

/* "<seq> <ts> <channel>[ padding]": latency, then order per (subscriber, channel). */
static void measure(sub_t *s, const char *p, size_t n, int64_t now) {
    const char *end = p + n;
    int64_t seq, ts;
    st.events++;
    if (!number(&p, end, &seq) || !number(&p, end, &ts)) {
        st.unparsed++;
        return;
    }
    const char *name = p;
    while (p < end && *p != ' ') p++;
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 65536;
        lat = grow(lat, caplat * sizeof *lat);
    }
    lat[nlat++] = (double)(now - ts) * 1e-9;
    seen_t *seen = NULL;
    for (uint32_t i = 0; i < s->nseen; i++) { /* usually one channel: no hashing */
        uint32_t c = s->seen[i].chan;
        if (ch.len[c] == (size_t)(p - name) && memcmp(ch.name[c], name, ch.len[c]) == 0) {
            seen = &s->seen[i];
            break;
        }
    }
    if (!seen) { /* a channel we did not ask for: track it too, as sse_client.py does */
        s->seen = grow(s->seen, (s->nseen + 1) * sizeof *s->seen);
        seen = &s->seen[s->nseen++];
        *seen = (seen_t){channel(name, (size_t)(p - name)), 0};
    }
    if (seq > seen->last_seq) {
        st.gaps += seq - seen->last_seq - 1;
        seen->last_seq = seq;
    } else {
        st.duplicates++;
    }
}

/* A blank line ends an event: the id (if any) becomes the one to resume from, and the
 * event counts if it had data (an "id:" alone only moves the position). */
static void dispatch(sub_t *s, int64_t now) {
    if (s->has_id) {
        s->last_id.len = 0;
        put(&s->last_id, s->id.p, s->id.len);
        s->has_id = false;
    }
    if (!s->has_data) return;
    s->has_data = false;
    measure(s, s->data.p, s->data.len, now);
    s->data.len = 0;
}

static void field(sub_t *s, const char *p, size_t n, int64_t now) {
    if (n == 0) {
        dispatch(s, now);
        return;
    }
    if (p[0] == ':') return; /* a comment: heartbeats are ":" */
    const char *colon = memchr(p, ':', n);
    size_t name = colon ? (size_t)(colon - p) : n;
    const char *value = colon ? colon + 1 : p + n;
    size_t len = (size_t)(p + n - value);
    if (len && *value == ' ') value++, len--;
    if (name == 4 && memcmp(p, "data", 4) == 0) {
        if (s->has_data) put(&s->data, "\n", 1);
        put(&s->data, value, len);
        s->has_data = true;
    } else if (name == 2 && memcmp(p, "id", 2) == 0 && !memchr(value, 0, len)) {
        s->id.len = 0;
        put(&s->id, value, len);
        s->has_id = true;
    } /* event: and retry: do not matter here: we reconnect when told to */
}

/* Split the stream into lines ending in CRLF, LF or CR; a line cut by the end of a read
 * waits in s->line, everything else is parsed where it lies. */
static void sse(sub_t *s, const char *p, size_t n, int64_t now) {
    const char *end = p + n;
    if (s->cr && p < end && *p == '\n') p++;
    s->cr = false;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *cr = memchr(p, '\r', (size_t)((eol ? eol : end) - p));
        if (cr) eol = cr;
        if (!eol) {
            put(&s->line, p, (size_t)(end - p));
            return;
        }
        if (s->line.len) {
            put(&s->line, p, (size_t)(eol - p));
            field(s, s->line.p, s->line.len, now);
            s->line.len = 0;
        } else {
            field(s, p, (size_t)(eol - p), now);
        }
        if (*eol == '\r') {
            if (eol + 1 == end) s->cr = true;
            else if (eol[1] == '\n') eol++;
        }
        p = eol + 1;
    }
}

/* HTTP/1.1 chunked transfer coding; false on a malformed stream. */
static bool dechunk(sub_t *s, const char *p, size_t n, int64_t now) {
    const char *end = p + n;
    while (p < end) {
        char c = *p;
        switch (s->chunk) {
        case K_DATA: {
            size_t take = (size_t)(end - p) < s->left ? (size_t)(end - p) : (size_t)s->left;
            sse(s, p, take, now);
            p += take;
            s->left -= take;
            if (!s->left) s->chunk = K_DATA_CR;
            continue;
        }
        case K_SIZE:
            if (isxdigit((unsigned char)c)) {
                if (++s->chunk_digits > 12) return false;
                s->left = s->left * 16 + (uint64_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
            } else if (c == ';' || c == ' ' || c == '\t') {
                s->chunk = K_EXT;
            } else if (c == '\r') {
                s->chunk = K_SIZE_LF;
            } else {
                return false;
            }
            break;
        case K_EXT:
            if (c != '\n') break;
            /* fall through - the LF ends the size line */
        case K_SIZE_LF:
            if (c != '\n') return false;
            if (!s->chunk_digits) return false;
            s->chunk = s->left ? K_DATA : K_END; /* "0": the server ended the stream */
            s->chunk_digits = 0;
            break;
        case K_DATA_CR:
            if (c != '\r') return false;
            s->chunk = K_DATA_LF;
            break;
        case K_DATA_LF:
            if (c != '\n') return false;
            s->chunk = K_SIZE;
            break;
        case K_END:
            return true; /* trailers, then the close that counts as a drop */
        }
        p++;
    }
    return true;
}

/* -- connections ------------------------------------------------------------------- */

static void close_fd(sub_t *s) {
    if (s->fd >= 0) close(s->fd); /* closing also takes it out of the epoll set */
    s->fd = -1;
    if (s->state == S_BODY) held--;
    s->state = S_IDLE;
}

static void flight_remove(sub_t *s) {
    uint32_t moved = op.flight[--op.nflight];
    op.flight[s->flight] = moved;
    subs[moved].flight = s->flight;
}

static void attempt_failed(sub_t *s, int64_t now) {
    close_fd(s);
    if (++s->attempt < ATTEMPTS) { /* pause 0.2 s, then 0.4 s, as worker.py */
        s->state = S_BACKOFF;
        s->deadline = now + 200000000LL * s->attempt;
        return;
    }
    s->attempt = 0;
    op.failed++;
    st.errors++;
    flight_remove(s);
}

static void attempt(sub_t *s, int64_t now) {
    int one = 1;
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        attempt_failed(s, now);
        return;
    }
    s->state = S_CONNECTING;
    s->deadline = now + op.timeout;
    /* The port is picked at connect time, per destination: more connections per source
     * address than a bind() to port 0, which reserves a port for all destinations. */
    setsockopt(s->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)(s - subs)};
    if (bind(s->fd, (struct sockaddr *)&s->source, sizeof s->source) < 0 ||
        (connect(s->fd, (struct sockaddr *)&s->server, sizeof s->server) < 0 &&
         errno != EINPROGRESS) ||
        epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev) < 0)
        attempt_failed(s, now);
}

static void request(sub_t *s, int64_t now) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
        attempt_failed(s, now);
        return;
    }
    /* A fresh connection starts a fresh parse; the position (last id, sequences) stays. */
    s->head.len = s->line.len = s->data.len = 0;
    s->has_data = s->has_id = s->cr = false;
    s->chunk = K_SIZE;
    s->left = 0;
    s->chunk_digits = 0;
    static buf_t req;
    char port[16];
    snprintf(port, sizeof port, "%u", ntohs(s->server.sin_port));
    req.len = 0;
    const char *parts[] = {"GET ", s->path, " HTTP/1.1\r\nHost: ", s->host, ":", port,
                           "\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"};
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) put(&req, parts[i], strlen(parts[i]));
    if (s->last_id.len) {
        put(&req, "Last-Event-ID: ", 15);
        put(&req, s->last_id.p, s->last_id.len);
        put(&req, "\r\n", 2);
    }
    put(&req, "\r\n", 2);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(s - subs)};
    if (send(s->fd, req.p, req.len, MSG_NOSIGNAL) != (ssize_t)req.len ||
        epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev) < 0) {
        attempt_failed(s, now);
        return;
    }
    s->state = S_HEAD;
    s->deadline = now + op.timeout; /* the answer gets its own timeout, as sse_client.py */
}

/* The response head: 200 and the body's coding; false when the attempt failed. */
static bool head(sub_t *s, const char *p, size_t n, int64_t now, size_t *used) {
    size_t from = s->head.len > 3 ? s->head.len - 3 : 0;
    put(&s->head, p, n);
    char *h = s->head.p;
    char *blank = memmem(h + from, s->head.len - from, "\r\n\r\n", 4);
    if (!blank) {
        *used = n;
        if (s->head.len <= MAX_HEAD) return true;
        st.errors++;
        attempt_failed(s, now);
        return false;
    }
    size_t size = (size_t)(blank - h) + 4;
    *used = n - (s->head.len - size); /* what follows the head is body */
    const char *sp = memchr(h, ' ', size);
    if (!sp || size - (size_t)(sp - h) < 5 || memcmp(sp + 1, "200", 3) != 0 ||
        (sp[4] != ' ' && sp[4] != '\r')) {
        st.errors++;
        attempt_failed(s, now);
        return false;
    }
    for (size_t i = 0; i < size; i++) h[i] = (char)tolower((unsigned char)h[i]);
    s->chunked = memmem(h, size, "transfer-encoding: chunked", 26) != NULL;
    free(s->head.p); /* a held connection keeps no head */
    s->head = (buf_t){0};
    s->state = S_BODY;
    s->attempt = 0;
    held++;
    flight_remove(s);
    return true;
}

/* The peer closed, or the stream broke: a drop if we held it, else a failed attempt. */
static void lost(sub_t *s, int64_t now) {
    if (s->state == S_BODY) {
        st.dropped++;
        close_fd(s);
    } else {
        attempt_failed(s, now);
    }
}

/* One read per wake-up: a socket with a backlog gets another turn after the others. */
static void readable(sub_t *s, int64_t mono) {
    ssize_t n = recv(s->fd, rbuf, READ_SIZE, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {
        lost(s, mono);
        return;
    }
    int64_t now = clock_ns(CLOCK_REALTIME); /* one clock read per read, as Python */
    const char *p = rbuf;
    size_t len = (size_t)n;
    if (s->state == S_HEAD) {
        size_t used;
        if (!head(s, p, len, mono, &used)) return;
        p += used;
        len -= used;
    }
    if (s->state == S_BODY && len) {
        if (!s->chunked) {
            sse(s, p, len, now);
        } else if (!dechunk(s, p, len, now)) {
            st.errors++;
            lost(s, mono);
        }
    }
}

static void on_event(uint32_t index, int64_t mono) {
    sub_t *s = &subs[index];
    if (s->fd < 0) return; /* closed earlier in this batch (disconnect) */
    if (s->state == S_CONNECTING) request(s, mono);
    else readable(s, mono);
}

/* -- commands ---------------------------------------------------------------------- */

static void commands(void);

static void behind(int64_t *nsubs_behind, int64_t *nevents) {
    *nsubs_behind = *nevents = 0;
    for (uint32_t i = 0; i < nsubs; i++) {
        int64_t b = 0;
        for (uint32_t j = 0; j < subs[i].nchan; j++) {
            int64_t d = ch.expected[subs[i].seen[j].chan] - subs[i].seen[j].last_seq;
            if (d > 0) b += d;
        }
        *nsubs_behind += b > 0;
        *nevents += b;
    }
}

static void set_expected(char **save) {
    for (uint32_t c = 0; c < ch.n; c++) ch.expected[c] = 0;
    char *name, *count;
    while ((name = strtok_r(NULL, " ", save)) && (count = strtok_r(NULL, " ", save))) {
        uint32_t c = channel(name, strlen(name)); /* first: it may move ch.expected */
        ch.expected[c] = strtoll(count, NULL, 10);
    }
}

static void add_sub(char **save) {
    char *source = strtok_r(NULL, " ", save), *ip = strtok_r(NULL, " ", save);
    char *port = strtok_r(NULL, " ", save), *host = strtok_r(NULL, " ", save);
    char *path = strtok_r(NULL, " ", save);
    if (!path) die("sub: missing fields");
    if (nsubs == capsubs) {
        capsubs = capsubs ? capsubs * 2 : 1024;
        subs = grow(subs, capsubs * sizeof *subs);
    }
    sub_t *s = &subs[nsubs];
    *s = (sub_t){.fd = -1, .host = strdup(host), .path = strdup(path)};
    s->source.sin_family = s->server.sin_family = AF_INET;
    s->server.sin_port = htons((uint16_t)atoi(port));
    if (inet_pton(AF_INET, source, &s->source.sin_addr) != 1 ||
        inet_pton(AF_INET, ip, &s->server.sin_addr) != 1)
        die("sub: bad address");
    for (char *name; (name = strtok_r(NULL, " ", save));) {
        uint32_t c = channel(name, strlen(name));
        if (seen_of(s, c)) continue;
        s->seen = grow(s->seen, (s->nseen + 1) * sizeof *s->seen);
        s->seen[s->nseen++] = (seen_t){c, 0};
    }
    s->nchan = s->nseen;
    nsubs++;
}

static void connect_start(char **save) {
    char *concurrency = strtok_r(NULL, " ", save), *timeout = strtok_r(NULL, " ", save);
    if (!timeout) die("connect: missing fields");
    op.concurrency = atoi(concurrency) > 0 ? atoi(concurrency) : 1;
    op.timeout = (int64_t)(atof(timeout) * 1e9);
    op.started = clock_ns(CLOCK_MONOTONIC);
    op.queue = grow(op.queue, (nsubs + 1) * sizeof *op.queue);
    op.flight = grow(op.flight, ((size_t)op.concurrency + 1) * sizeof *op.flight);
    op.nqueue = op.next = op.nflight = 0;
    op.failed = 0;
    for (uint32_t i = 0; i < nsubs; i++)
        if (subs[i].state == S_IDLE) op.queue[op.nqueue++] = i;
    op.active = true;
    last_tick = 0; /* start at the next tick, i.e. now */
}

/* Retry what timed out or waited long enough, start more up to the concurrency, and
 * answer once every subscriber has connected or failed ATTEMPTS times. */
static void connect_pump(int64_t now) {
    for (uint32_t i = 0; i < op.nflight;) {
        uint32_t index = op.flight[i];
        sub_t *s = &subs[index];
        if (now >= s->deadline) {
            if (s->state == S_BACKOFF) attempt(s, now);
            else attempt_failed(s, now);
        }
        if (i < op.nflight && op.flight[i] == index) i++; /* else another moved into i */
    }
    while (op.nflight < (uint32_t)op.concurrency && op.next < op.nqueue) {
        sub_t *s = &subs[op.queue[op.next++]];
        s->attempt = 0;
        s->flight = op.nflight;
        op.flight[op.nflight++] = (uint32_t)(s - subs);
        attempt(s, now);
    }
    if (op.next == op.nqueue && op.nflight == 0) {
        op.active = false;
        reply("%u %" PRId64 " %.6f\n", held, op.failed, (double)(now - op.started) * 1e-9);
        commands(); /* lines that came meanwhile */
    }
}

static void wait_check(int64_t now) {
    int64_t nb, ne;
    behind(&nb, &ne);
    if (nb && now < wt.deadline) return;
    wt.active = false;
    reply("%d %.6f %" PRId64 " %" PRId64 "\n", nb == 0, (double)clock_ns(CLOCK_REALTIME) * 1e-9,
          nb, ne);
    commands();
}

static void command(char *line) {
    char *save, *verb = strtok_r(line, " ", &save);
    if (!verb) return;
    if (strcmp(verb, "sub") == 0) {
        add_sub(&save);
    } else if (strcmp(verb, "connect") == 0) {
        connect_start(&save);
    } else if (strcmp(verb, "disconnect") == 0) {
        for (uint32_t i = 0; i < nsubs; i++) close_fd(&subs[i]);
        reply("%u\n", held);
    } else if (strcmp(verb, "stats") == 0) {
        int64_t nb, ne;
        set_expected(&save);
        behind(&nb, &ne);
        reply("%" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64
              " %u %" PRId64 " %" PRId64 " %zu\n",
              st.events, st.unparsed, st.gaps, st.duplicates, st.errors, st.dropped, held, nb, ne,
              nlat);
        write_all(lat, nlat * sizeof *lat);
        memset(&st, 0, sizeof st);
        nlat = 0;
    } else if (strcmp(verb, "wait") == 0) {
        char *timeout = strtok_r(NULL, " ", &save);
        if (!timeout) die("wait: missing timeout");
        wt.deadline = clock_ns(CLOCK_MONOTONIC) + (int64_t)(atof(timeout) * 1e9);
        set_expected(&save);
        wt.active = true;
        last_tick = 0;
    } else {
        fprintf(stderr, "csub: unknown command %s\n", verb);
        exit(2);
    }
}

/* Run complete lines, but none while a connect or wait is under way: the worker sends
 * one command at a time, and the next only after the reply. */
static void commands(void) {
    while (!op.active && !wt.active) {
        char *nl = memchr(in.p + in_off, '\n', in.len - in_off);
        if (!nl) break;
        *nl = 0;
        command(in.p + in_off);
        in_off = (size_t)(nl - in.p) + 1;
    }
    memmove(in.p, in.p + in_off, in.len - in_off);
    in.len -= in_off;
    in_off = 0;
}

static void read_stdin(void) {
    char chunk[65536];
    ssize_t n = read(STDIN_FILENO, chunk, sizeof chunk); /* non-blocking */
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) exit(0); /* the worker is gone or told us to stop */
    put(&in, chunk, (size_t)n);
    commands();
}

int main(void) {
    struct rlimit fds;
    if (getrlimit(RLIMIT_NOFILE, &fds) == 0) { /* one fd per subscriber */
        fds.rlim_cur = fds.rlim_max;
        setrlimit(RLIMIT_NOFILE, &fds);
    }
    signal(SIGPIPE, SIG_IGN);
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = STDIN_TAG};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, STDIN_FILENO, &ev) < 0) die("epoll");
    fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
    struct epoll_event events[1024];
    int64_t polled = 0;
    for (;;) {
        int n = epoll_wait(ep, events, 1024, op.active || wt.active ? 2 : -1);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            int64_t mono = clock_ns(CLOCK_MONOTONIC);
            if (events[i].data.u64 == STDIN_TAG) read_stdin();
            else on_event((uint32_t)events[i].data.u64, mono);
            /* With a backlog on many sockets one batch can take seconds: commands and
             * `wait` must not wait for its end. (New connections start only between
             * batches, so that no event of this batch meets a reused subscriber.) */
            if (mono - polled >= TICK_NS) {
                polled = mono;
                read_stdin();
                if (wt.active) wait_check(mono);
            }
        }
        int64_t mono = clock_ns(CLOCK_MONOTONIC);
        if ((op.active || wt.active) && mono - last_tick >= TICK_NS) {
            last_tick = mono;
            if (op.active) connect_pump(mono);
            if (wt.active) wait_check(mono);
        }
    }
}
