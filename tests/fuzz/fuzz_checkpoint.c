/* libFuzzer: a safetensors checkpoint through every reader: the checksums, the model (and its
 * tensors as a checkpoint names them), the optimizer, a metadata key and a float array. A
 * mutator changes one tensor's shape as sizes (fuzz_mutate.h) and its data_offsets to span what
 * the shape claims after 64-bit wrapping. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backprop/backprop.h"
#include "fuzz_mutate.h"
#include "fuzz_util.h"

static bp_device *device;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!device && !(device = bp_device_open("cpu", NULL))) abort();
    const char *path = fuzz_write("ckpt.st", data, size);
    int verified = 0;
    bp_status st = bp_checkpoint_verify(path, &verified);
    if ((st != BP_OK && verified) || (st != BP_OK && !bp_last_error()[0])) abort();
    /* max_batch 0: the one saved; a header's claim is checked against the file before use. */
    bp_model *m = bp_checkpoint_load_model(path, device, 0, &st);
    if (!m != (st != BP_OK) || (!m && !bp_last_error()[0])) abort();
    if (m) {
        /* The tensors a loaded model names (backprop info's list) tile its flat buffer in order */
        size_t next = 0;
        for (int i = 0; i < bp_checkpoint_n_tensors(m); ++i) {
            bp_param_tensor t;
            if (bp_checkpoint_tensor(m, i, &t) != BP_OK || t.offset != next ||
                !memchr(t.name, '\0', sizeof t.name) || t.shape[0] < 1 || t.shape[1] < 1)
                abort();
            next += (size_t)t.shape[0] * (size_t)t.shape[1];
        }
        if (next != bp_model_n_params(m)) abort();
        bp_optimizer *o = bp_checkpoint_load_optimizer(path, m, &st);
        if (!o != (st != BP_OK)) abort();
        bp_optimizer_free(o);
        bp_model_free(m);
    }
    free(bp_checkpoint_get_meta(path, "epoch", NULL));
    size_t count = 0;
    free(bp_checkpoint_get_array(path, "scale", &count, NULL));
    return 0;
}

/* The n-th "shape":[...] of the JSON header (counting from 0, wrapping around). */
static const char *nth_shape(const char *json, unsigned n) {
    const char *first = strstr(json, "\"shape\":["), *at = first;
    for (; at && n; --n)
        at = strstr(at + 1, "\"shape\":[");
    return at ? at : first;
}

/* One tensor's shape changed, its data_offsets' end set to begin + 4 x the wrapped product
 * (the checkpoint's tensors are F32); the body kept. */
static size_t mutate_checkpoint(uint8_t *data, size_t size, size_t max_size, uint64_t *s) {
    if (size < 8) return 0;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; --i)
        hlen = hlen << 8 | data[i];
    if (hlen > size - 8) return 0;
    /* The new file is the old one with other numbers in one shape and its offsets (at most
     * 8 + 2 of 20 digits and their commas), so cap never truncates. */
    size_t cap = size + 256;
    char *json = malloc((size_t)hlen + 1), *out = malloc(cap);
    if (!json || !out) {
        free(json);
        free(out);
        return 0;
    }
    memcpy(json, data + 8, (size_t)hlen);
    json[hlen] = '\0';
    const char *at = nth_shape(json, (unsigned)(fuzz_rand(s) % 8)), *end = at ? strchr(at, ']') : 0;
    const char *offs = end ? strstr(end, "\"data_offsets\":[") : NULL;
    const char *offs_end = offs ? strchr(offs, ']') : NULL;
    size_t n = 0;
    if (offs_end) {
        fuzz_dims f = {0, {0}, UINT64_MAX};
        for (const char *p = at + 9; f.n < FUZZ_MAX_DIMS && p < end; p += strspn(p, ", ")) {
            char *next;
            f.d[f.n++] = strtoull(p, &next, 10);
            if (next == p) break;
            p = next;
        }
        for (int k = 1 + (int)(fuzz_rand(s) % 3); k > 0; --k)
            fuzz_mutate_dims(&f, s);
        unsigned long long begin = strtoull(offs + 16, NULL, 10);
        int w = snprintf(out + 8, cap - 8, "%.*s\"shape\":[", (int)(at - json), json);
        for (int i = 0; i < f.n && w > 0; ++i)
            w += snprintf(out + 8 + w, cap - 8 - (size_t)w, "%s%llu", i ? "," : "",
                          (unsigned long long)f.d[i]);
        if (w > 0)
            w += snprintf(out + 8 + w, cap - 8 - (size_t)w, "%.*s\"data_offsets\":[%llu,%llu%s",
                          (int)(offs - end), end, begin,
                          begin + 4 * (unsigned long long)fuzz_wrapped(&f), offs_end);
        size_t body = size - 8 - (size_t)hlen;
        if (w > 0 && 8 + (size_t)w + body <= max_size) {
            for (int i = 0; i < 8; ++i)
                out[i] = (char)((uint64_t)w >> (8 * i));
            memcpy(out + 8 + w, data + 8 + hlen, body);
            n = 8 + (size_t)w + body;
            memcpy(data, out, n);
        }
    }
    free(json);
    free(out);
    return n;
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed) {
    uint64_t s = (uint64_t)seed << 1 | 1;
    size_t n = fuzz_rand(&s) % 2 ? mutate_checkpoint(data, size, max_size, &s) : 0;
    return n ? n : LLVMFuzzerMutate(data, size, max_size);
}
