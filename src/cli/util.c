/* Small helpers: messages, clocks, number lists, numbers and plurals. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cli.h"

/* Set by dist.c in a data-parallel run; messages name the rank. */
int cli_rank = 0, cli_ranks = 1;

FILE *cli_human = NULL;

FILE *cli_out(void) {
    return cli_human ? cli_human : stdout;
}

double cli_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void message(int cmd, const char *kind, const char *fmt, va_list ap) {
    fflush(stdout); /* keep the order of table rows and messages when both go to a file */
    const char *name = cli_command_name(cmd);
    /* One write per message, so the lines of several ranks on one terminal do not mix. */
    char buf[2048];
    int n = snprintf(buf, sizeof buf, "backprop%s%s", name[0] ? " " : "", name);
    if (cli_ranks > 1)
        n += snprintf(buf + n, sizeof buf - (size_t)n, " (rank %d of %d)", cli_rank, cli_ranks);
    n += snprintf(buf + n, sizeof buf - (size_t)n, ": %s", kind);
    if (n < (int)sizeof buf - 1) vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    fprintf(stderr, "%s\n", buf);
}

int cli_usage_error(int cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    message(cmd, "", fmt, ap);
    va_end(ap);
    return CLI_EXIT_USAGE;
}

int cli_fail(int cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    message(cmd, "", fmt, ap);
    va_end(ap);
    return CLI_EXIT_FAIL;
}

void cli_warn(int cmd, const char *fmt, ...) {
    if (cli_rank > 0) return; /* every rank would say the same */
    va_list ap;
    va_start(ap, fmt);
    message(cmd, "warning: ", fmt, ap);
    va_end(ap);
}

int cli_lib_fail(int cmd, const char *what) {
    const char *detail = bp_last_error();
    if (what && what[0]) return cli_fail(cmd, "%s: %s", what, detail[0] ? detail : "failed");
    return cli_fail(cmd, "%s", detail[0] ? detail : "failed");
}

char *cli_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (!p) {
        fprintf(stderr, "backprop: out of memory\n");
        exit(CLI_EXIT_FAIL); /* only tiny strings come here; nothing useful can go on */
    }
    return memcpy(p, s, n);
}

int cli_has_ext(const char *path, const char *ext) {
    size_t n = strlen(path), m = strlen(ext);
    return n > m && strcasecmp(path + n - m, ext) == 0;
}

/* ---- float lists ---- */

char *cli_format_floats(const float *v, size_t n) {
    size_t cap = n * 18 + 1;
    char *s = malloc(cap);
    if (!s) return NULL;
    size_t used = 0;
    s[0] = '\0';
    for (size_t i = 0; i < n; ++i)
        used += (size_t)snprintf(s + used, cap - used, "%s%.9g", i ? "," : "", (double)v[i]);
    return s;
}

long cli_parse_floats(const char *s, float *out, size_t cap) {
    size_t n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno == ERANGE || n == cap) return -1;
        out[n++] = (float)v;
        if (*end == '\0') break;
        if (*end != ',') return -1;
        p = end + 1;
    }
    return (long)n;
}

uint64_t cli_fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; ++i)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* ---- numbers and words as people write them ---- */

const char *cli_num(double v) {
    static char bufs[8][40]; /* rotating, so one message may hold several */
    static int next;
    char *buf = bufs[next++ % 8];
    if (v == floor(v) && fabs(v) < 9.007199254740992e15)
        snprintf(buf, sizeof bufs[0], "%.0f", v); /* 1048576, never 1.04858e+06 */
    else
        snprintf(buf, sizeof bufs[0], "%.6g", v);
    return buf;
}

const char *cli_plural(long long n, const char *one, const char *many) {
    return n == 1 ? one : many;
}
