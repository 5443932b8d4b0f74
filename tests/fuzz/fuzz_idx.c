/* libFuzzer: bp_dataset_load_idx on an images file and a labels file (see fuzz_split), with a
 * mutator that changes the images' sizes as sizes (fuzz_mutate.h) and keeps the labels' count
 * and both bodies in step with them. */
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
    const char *images = fuzz_write("images", a, na), *labels = fuzz_write("labels", b, nb);
    bp_status st = BP_OK;
    bp_dataset *d = bp_dataset_load_idx(images, labels, &st);
    /* The contract: a dataset, or NULL with a status and a message. */
    if (!d != (st != BP_OK) || (!d && !bp_last_error()[0])) abort();
    bp_dataset_free(d);
    return 0;
}

static uint32_t get_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint8_t *put_idx_header(uint8_t *p, uint8_t type, const fuzz_dims *f) {
    *p++ = 0, *p++ = 0, *p++ = type, *p++ = (uint8_t)f->n;
    for (int i = 0; i < f->n; ++i)
        for (int shift = 24; shift >= 0; shift -= 8)
            *p++ = (uint8_t)(f->d[i] >> shift);
    return p;
}

/* Copies n bytes of body from the old body (repeated), or zeros when there was none. */
static uint8_t *put_body(uint8_t *p, size_t n, const uint8_t *old, size_t n_old) {
    for (size_t i = 0; i < n; ++i)
        p[i] = n_old ? old[i % n_old] : 0;
    return p + n;
}

/* The images' sizes changed, the labels' count set to the sample count, bodies resized. */
static size_t mutate_idx(uint8_t *data, size_t size, size_t max_size, uint64_t *s) {
    const uint8_t *a, *b;
    size_t na, nb;
    fuzz_split(data, size, &a, &na, &b, &nb);
    fuzz_dims f = {0, {0}, UINT32_MAX};
    if (na < 4 || a[0] || a[1] || a[3] > FUZZ_MAX_DIMS || na < 4 + 4 * (size_t)a[3]) return 0;
    f.n = a[3];
    for (int i = 0; i < f.n; ++i)
        f.d[i] = get_be32(a + 4 + 4 * i);
    int times = 1 + (int)(fuzz_rand(s) % 3);
    for (int k = 0; k < times; ++k)
        fuzz_mutate_dims(&f, s);
    size_t head = 2 + 4 + 4 * (size_t)f.n + 8;
    if (head > max_size) return 0;
    uint8_t *out = malloc(max_size);
    if (!out) return 0;
    const uint8_t *old_img = a + 4 + 4 * (size_t)a[3], *old_lab = nb > 8 ? b + 8 : b;
    size_t n_old_img = na - 4 - 4 * (size_t)a[3], n_old_lab = nb > 8 ? nb - 8 : 0;
    uint64_t samples = f.n ? f.d[0] : 0;
    size_t room = max_size - head;
    size_t n_lab = fuzz_body(samples, 1, room / 2, s);
    size_t n_img = fuzz_body(fuzz_wrapped(&f), 1, room - n_lab, s);
    uint8_t *p = put_idx_header(out + 2, a[2], &f);
    p = put_body(p, n_img, old_img, n_old_img);
    size_t cut = (size_t)(p - out - 2);
    out[0] = (uint8_t)cut, out[1] = (uint8_t)(cut >> 8);
    fuzz_dims lab = {1, {samples}, UINT32_MAX};
    p = put_idx_header(p, 0x08, &lab);
    p = put_body(p, n_lab, old_lab, n_old_lab);
    size_t n = (size_t)(p - out);
    memcpy(data, out, n);
    free(out);
    return n;
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed) {
    uint64_t s = (uint64_t)seed << 1 | 1;
    size_t n = fuzz_rand(&s) % 2 ? mutate_idx(data, size, max_size, &s) : 0;
    return n ? n : LLVMFuzzerMutate(data, size, max_size);
}
