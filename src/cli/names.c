/* Class names: copies of a dataset's, the form checkpoints keep them in (run.class_names, the
 * names joined by line ends, which no CSV field holds), lists for messages and CSV fields. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

void cli_names_free(cli_names *names) {
    for (int i = 0; i < names->n; ++i)
        free(names->v[i]);
    free(names->v);
    names->v = NULL;
    names->n = 0;
}

static int take(cli_names *names, int n) {
    cli_names_free(names);
    names->v = calloc((size_t)(n ? n : 1), sizeof *names->v);
    return names->v ? 0 : -1;
}

int cli_names_from_dataset(cli_names *names, const bp_dataset *ds) {
    int n = bp_dataset_n_class_names(ds);
    if (take(names, n)) return -1;
    for (int i = 0; i < n; ++i) {
        names->v[i] = cli_strdup(bp_dataset_class_name(ds, i));
        names->n++;
    }
    return 0;
}

char *cli_names_join(const cli_names *names) {
    size_t len = 1;
    for (int i = 0; i < names->n; ++i)
        len += strlen(names->v[i]) + 1;
    char *s = malloc(len), *p = s;
    if (!s) return NULL;
    for (int i = 0; i < names->n; ++i) {
        size_t k = strlen(names->v[i]);
        if (i) *p++ = '\n';
        memcpy(p, names->v[i], k);
        p += k;
    }
    *p = '\0';
    return s;
}

int cli_names_split(cli_names *names, const char *text) {
    int n = 1;
    for (const char *p = text; *p; ++p)
        n += *p == '\n';
    if (take(names, n)) return -1;
    for (const char *p = text;;) {
        size_t k = strcspn(p, "\n");
        char *v = malloc(k + 1);
        if (!v) return -1;
        memcpy(v, p, k);
        v[k] = '\0';
        names->v[names->n++] = v;
        if (!p[k]) break;
        p += k + 1;
    }
    return 0;
}

const char *cli_names_list(const cli_names *names) {
    static char bufs[4][256];
    static int next;
    char *buf = bufs[next++ % 4];
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < names->n; ++i) {
        const char *sep = i ? ", " : "";
        if (at + strlen(sep) + strlen(names->v[i]) + 6 >= sizeof bufs[0] || i == 8) {
            snprintf(buf + at, sizeof bufs[0] - at, "%s...", sep);
            break;
        }
        at += (size_t)snprintf(buf + at, sizeof bufs[0] - at, "%s%s", sep, names->v[i]);
    }
    return buf;
}

void cli_csv_field(FILE *f, const char *s, char delim) {
    size_t n = strlen(s);
    int quote = n == 0 || strchr(s, delim) || strchr(s, '"') || s[0] == ' ' || s[0] == '\t' ||
                s[n - 1] == ' ' || s[n - 1] == '\t';
    if (!quote) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (const char *p = s; *p; ++p) {
        if (*p == '"') fputc('"', f);
        fputc(*p, f);
    }
    fputc('"', f);
}
