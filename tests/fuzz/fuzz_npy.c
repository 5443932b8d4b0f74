/* libFuzzer: bp_dataset_load_npy on a features file and a targets file (see fuzz_split); the
 * first byte after the split picks the target kind; no targets file: features alone. A mutator
 * changes the features' shape as sizes (fuzz_mutate.h) and sizes the body to match. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backprop/backprop.h"
#include "fuzz_mutate.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *a, *b;
    size_t na, nb;
    fuzz_split(data, size, &a, &na, &b, &nb);
    bp_target_kind kind = (size > 2 && data[2] & 0x80) ? BP_TARGET_VALUES : BP_TARGET_CLASS;
    const char *x = fuzz_write("x.npy", a, na), *y = fuzz_write("y.npy", b, nb);
    if (nb == 0) kind = BP_TARGET_NONE, y = NULL;
    bp_status st = BP_OK;
    bp_dataset *d = bp_dataset_load_npy(x, y, kind, &st);
    if (!d != (st != BP_OK) || (!d && !bp_last_error()[0])) abort();
    bp_dataset_free(d);
    return 0;
}

/* A version 1 .npy file's header: the dict's text around its shape tuple, and the shape. */
typedef struct npy_parts {
    const char *dict, *shape_at, *shape_end, *dict_end; /* "(...)" is [shape_at, shape_end) */
    size_t item;
    fuzz_dims f;
} npy_parts;

static int parse_npy(const uint8_t *a, size_t na, npy_parts *p) {
    if (na < 10 || memcmp(a, "\x93NUMPY\x01", 7) != 0) return 0;
    size_t hlen = (size_t)a[8] | (size_t)a[9] << 8;
    if (10 + hlen > na) return 0;
    char *dict = malloc(hlen + 1);
    if (!dict) return 0;
    memcpy(dict, a + 10, hlen);
    dict[hlen] = '\0';
    const char *at = strstr(dict, "'shape': ("), *descr = strstr(dict, "'descr': '");
    const char *end = at ? strchr(at, ')') : NULL;
    if (!at || !end || strlen(dict) != hlen) {
        free(dict);
        return 0;
    }
    p->dict = dict, p->shape_at = at + 9, p->shape_end = end + 1, p->dict_end = dict + hlen;
    /* The item size is the third character of the descr ('<f4'), when the text has one. */
    int size = descr && descr[10] && descr[11] && descr[12] ? descr[12] - '0' : 1;
    p->item = size >= 1 && size <= 8 ? (size_t)size : 1;
    p->f = (fuzz_dims){0, {0}, ((uint64_t)1 << 48) - 1};
    for (const char *s = p->shape_at + 1; p->f.n < FUZZ_MAX_DIMS && s < end;) {
        char *next;
        p->f.d[p->f.n++] = strtoull(s, &next, 10);
        if (next == s) break;
        s = next + strspn(next, ", L");
    }
    return 1;
}

/* The features' shape changed and their body sized to it; the targets kept or dropped. */
static size_t mutate_npy(uint8_t *data, size_t size, size_t max_size, uint64_t *s) {
    const uint8_t *a, *b;
    size_t na, nb;
    fuzz_split(data, size, &a, &na, &b, &nb);
    npy_parts p;
    if (!parse_npy(a, na, &p)) return 0;
    int times = 1 + (int)(fuzz_rand(s) % 3);
    for (int k = 0; k < times; ++k)
        fuzz_mutate_dims(&p.f, s);
    char shape[FUZZ_MAX_DIMS * 22 + 4];
    size_t n = (size_t)snprintf(shape, sizeof shape, "(");
    for (int i = 0; i < p.f.n; ++i)
        n += (size_t)snprintf(shape + n, sizeof shape - n, "%llu, ", (unsigned long long)p.f.d[i]);
    snprintf(shape + n, sizeof shape - n, ")");
    size_t keep_b = fuzz_rand(s) % 4 ? nb : 0;
    size_t before = (size_t)(p.shape_at - p.dict), after = (size_t)(p.dict_end - p.shape_end);
    size_t hlen = before + strlen(shape) + after, head = 2 + 10 + hlen + keep_b;
    uint8_t *out = head <= max_size && hlen < 65536 ? malloc(max_size) : NULL;
    if (!out) {
        free((void *)p.dict);
        return 0;
    }
    uint8_t *q = out + 2;
    memcpy(q, "\x93NUMPY\x01\x00", 8);
    q[8] = (uint8_t)hlen, q[9] = (uint8_t)(hlen >> 8);
    q += 10;
    memcpy(q, p.dict, before), q += before;
    memcpy(q, shape, strlen(shape)), q += strlen(shape);
    memcpy(q, p.shape_end, after), q += after;
    size_t body = fuzz_body(fuzz_wrapped(&p.f), p.item, max_size - head, s);
    memset(q, 0x3f, body), q += body; /* 0x3f3f3f3f: a finite float */
    size_t cut = (size_t)(q - out - 2);
    out[0] = (uint8_t)cut, out[1] = (uint8_t)(cut >> 8);
    memcpy(q, b, keep_b), q += keep_b;
    n = (size_t)(q - out);
    memcpy(data, out, n);
    free(out);
    free((void *)p.dict);
    return n;
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed) {
    uint64_t s = (uint64_t)seed << 1 | 1;
    size_t n = fuzz_rand(&s) % 2 ? mutate_npy(data, size, max_size, &s) : 0;
    return n ? n : LLVMFuzzerMutate(data, size, max_size);
}
