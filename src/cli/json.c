/* --json: one JSON object on standard output for scripts. Numbers are printed with %.17g, which
 * reads back as the same double (a float widened to double first, so it is exact too); a NaN or
 * an infinity, which JSON cannot hold, is null. Strings are escaped as RFC 8259 asks; bytes
 * that are not UTF-8 (a file name can hold any) become U+FFFD, so the output always parses. */
#define _POSIX_C_SOURCE 200809L /* regex.h */
#include <inttypes.h>
#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 when invalid: no overlong forms,
 * no surrogates, nothing above U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    if (s[0] < 0x80) return 1;
    size_t len = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
    if (len == 0 || s[0] > 0xf4 || len > n) return 0;
    for (size_t i = 1; i < len; ++i)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (len == 3 && s[0] == 0xe0 && s[1] < 0xa0) return 0;  /* overlong */
    if (len == 3 && s[0] == 0xed && s[1] >= 0xa0) return 0; /* surrogate */
    if (len == 4 && s[0] == 0xf0 && s[1] < 0x90) return 0;  /* overlong */
    if (len == 4 && s[0] == 0xf4 && s[1] >= 0x90) return 0; /* above U+10FFFF */
    return len;
}

int cli_utf8_valid(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t len = utf8_seq(p + i, n - i);
        if (!len) return 0;
        i += len;
    }
    return 1;
}

void cli_escape_bytes(const char *s, char *out, size_t size) {
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), at = 0;
    for (size_t i = 0; i < n && at + 5 < size;) {
        size_t len = utf8_seq(p + i, n - i);
        if (len && p[i] >= 0x20) {
            if (at + len + 1 >= size) break;
            memcpy(out + at, p + i, len);
            at += len;
            i += len;
        } else {
            at += (size_t)snprintf(out + at, size - at, "\\x%02x", p[i++]);
        }
    }
    out[at < size ? at : size - 1] = '\0';
}

void cli_json_open(cli_json *j, FILE *f) {
    memset(j, 0, sizeof *j);
    j->f = f;
    fputc('{', f);
}

void cli_json_close(cli_json *j) {
    fputs("}\n", j->f);
    fflush(j->f);
}

static void put_string(FILE *f, const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t len = utf8_seq(p + i, n - i);
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
        } else if (c == '\n') {
            fputs("\\n", f);
        } else if (c == '\t') {
            fputs("\\t", f);
        } else if (c == '\r') {
            fputs("\\r", f);
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(f, "\\u%04x", c);
        } else if (!len) {
            fputs("\\ufffd", f);
            len = 1;
        } else {
            fwrite(p + i, 1, len, f);
        }
        i += len ? len : 1;
    }
    fputc('"', f);
}

/* The separator and the key of the next value (no key inside an array). */
static void next(cli_json *j, const char *key) {
    if (j->count[j->depth]++) fputs(", ", j->f);
    if (key) {
        put_string(j->f, key);
        fputs(": ", j->f);
    }
}

void cli_json_begin(cli_json *j, const char *key, char bracket) {
    next(j, key);
    fputc(bracket, j->f);
    if (j->depth + 1 < (int)(sizeof j->count / sizeof j->count[0])) j->depth++;
    j->count[j->depth] = 0;
}

void cli_json_end(cli_json *j, char bracket) {
    fputc(bracket, j->f);
    if (j->depth > 0) j->depth--;
}

void cli_json_str(cli_json *j, const char *key, const char *v) {
    next(j, key);
    if (v)
        put_string(j->f, v);
    else
        fputs("null", j->f);
}

void cli_json_num(cli_json *j, const char *key, double v) {
    next(j, key);
    if (isfinite(v))
        fprintf(j->f, "%.17g", v);
    else
        fputs("null", j->f);
}

void cli_json_int(cli_json *j, const char *key, long long v) {
    next(j, key);
    fprintf(j->f, "%lld", v);
}

void cli_json_u64(cli_json *j, const char *key, uint64_t v) {
    next(j, key);
    fprintf(j->f, "%" PRIu64, v);
}

void cli_json_bool(cli_json *j, const char *key, int v) {
    next(j, key);
    fputs(v ? "true" : "false", j->f);
}

void cli_json_null(cli_json *j, const char *key) {
    next(j, key);
    fputs("null", j->f);
}

/* Whether text is a JSON number (RFC 8259's grammar). */
static int json_number(const char *s) {
    regex_t re;
    if (regcomp(&re, "^-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?$", REG_EXTENDED | REG_NOSUB))
        return 0;
    int ok = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

void cli_json_text(cli_json *j, const char *key, const char *text) {
    if (!json_number(text)) {
        char *end;
        double v = strtod(text, &end);
        if (end != text && !*end && !isfinite(v)) { /* "nan", "inf": not a JSON number */
            cli_json_null(j, key);
            return;
        }
        cli_json_str(j, key, text);
        return;
    }
    next(j, key);
    fputs(text, j->f);
}

void cli_json_names(cli_json *j, const char *key, const cli_names *names) {
    if (!names || names->n == 0) {
        cli_json_null(j, key);
        return;
    }
    cli_json_begin(j, key, '[');
    for (int i = 0; i < names->n; ++i)
        cli_json_str(j, NULL, names->v[i]);
    cli_json_end(j, ']');
}
