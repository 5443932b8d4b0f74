/* Header-aware mutation for the loaders' fuzz targets (LLVMFuzzerCustomMutator). Byte-level
 * mutation almost never turns a file's sizes into a product that wraps past 2^64 while the body
 * still matches the wrapped size, which is what a loader that multiplies first and checks
 * afterwards falls for. So the targets parse their format's sizes into a fuzz_dims, change them
 * as sizes (an interesting value, two sizes swapped, a prime factor moved from one size to
 * another, the last size completed so the product just passes 2^64, a size added or dropped),
 * and write the file back with a body as long as the sizes claim after 64-bit wrapping (or a
 * short one). Half the time they leave the input to libFuzzer's own mutations. */
#ifndef BP_FUZZ_MUTATE_H
#define BP_FUZZ_MUTATE_H

#include <stddef.h>
#include <stdint.h>

#define FUZZ_MAX_DIMS 8

typedef struct fuzz_dims {
    int n;
    uint64_t d[FUZZ_MAX_DIMS];
    uint64_t max; /* the largest size the format can hold */
} fuzz_dims;

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

/* A small xorshift generator seeded by libFuzzer's seed: the mutation is reproducible. */
static inline uint64_t fuzz_rand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* The product as a loader computing in uint64_t would see it: wrapped modulo 2^64. */
static inline uint64_t fuzz_wrapped(const fuzz_dims *f) {
    uint64_t p = 1;
    for (int i = 0; i < f->n; ++i)
        p *= f->d[i];
    return p;
}

static inline uint64_t fuzz_interesting(uint64_t *s, uint64_t max) {
    uint64_t k = fuzz_rand(s) % 64, v;
    switch (fuzz_rand(s) % 6) {
    case 0:
        v = fuzz_rand(s) % 17;
        break;
    case 1:
        v = (uint64_t)1 << k;
        break;
    case 2:
        v = ((uint64_t)1 << k) + 1;
        break;
    case 3:
        v = ((uint64_t)1 << k) - 1;
        break;
    case 4:
        v = max - fuzz_rand(s) % 3;
        break;
    default:
        v = fuzz_rand(s);
        break;
    }
    return v > max ? v % (max + 1) : v;
}

/* Moves a small prime factor of size i to size j: the product stays, the first size (the
 * sample count) changes. */
static inline void fuzz_move_factor(fuzz_dims *f, uint64_t *s) {
    static const uint64_t primes[] = {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47};
    int i = (int)(fuzz_rand(s) % (uint64_t)f->n), j = (int)(fuzz_rand(s) % (uint64_t)f->n);
    for (size_t k = 0; k < sizeof primes / sizeof *primes; ++k) {
        uint64_t p = primes[k];
        if (i != j && f->d[i] % p == 0 && f->d[j] <= f->max / p) {
            f->d[i] /= p;
            f->d[j] *= p;
            return;
        }
    }
}

/* Sets the last size to the least that takes the product of all past 2^64, when the format
 * can hold it. */
static inline void fuzz_complete(fuzz_dims *f, uint64_t *s) {
    unsigned __int128 p = 1, wrap = (unsigned __int128)1 << 64;
    for (int i = 0; i + 1 < f->n && p <= wrap; ++i)
        p *= f->d[i] ? f->d[i] : 1; /* at most 2^64 * 2^64: no 128-bit overflow */
    if (f->n < 2 || p > wrap) return;
    unsigned __int128 last = (wrap + p - 1) / p + fuzz_rand(s) % 2;
    if (last <= f->max) f->d[f->n - 1] = (uint64_t)last;
}

/* One size-aware change of f. */
static inline void fuzz_mutate_dims(fuzz_dims *f, uint64_t *s) {
    int i = f->n ? (int)(fuzz_rand(s) % (uint64_t)f->n) : 0;
    switch (fuzz_rand(s) % 6) {
    case 0:
        if (f->n) f->d[i] = fuzz_interesting(s, f->max);
        break;
    case 1: {
        int j = f->n ? (int)(fuzz_rand(s) % (uint64_t)f->n) : 0;
        uint64_t t = f->d[i];
        if (f->n) f->d[i] = f->d[j], f->d[j] = t;
        break;
    }
    case 2:
        if (f->n > 1) fuzz_move_factor(f, s);
        break;
    case 3:
        fuzz_complete(f, s);
        break;
    case 4:
        if (f->n < FUZZ_MAX_DIMS) f->d[f->n++] = fuzz_interesting(s, f->max);
        break;
    default:
        if (f->n > 1) f->n--;
        break;
    }
}

/* The body length a mutated file gets: as long as the wrapped product claims (elements of
 * `item` bytes) when that fits in `room`, else a short body of what fits. */
static inline size_t fuzz_body(uint64_t wrapped, size_t item, size_t room, uint64_t *s) {
    if (wrapped <= room / item && fuzz_rand(s) % 4) return (size_t)wrapped * item;
    return room ? (size_t)(fuzz_rand(s) % (room + 1)) : 0;
}

#endif
