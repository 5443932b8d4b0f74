/* Helpers for the libFuzzer targets: the loaders under test read files, so each input is
 * written to a private temporary file (in memory when /dev/shm exists) and loaded from there,
 * through exactly the code a user's file goes through. */
#ifndef BP_FUZZ_UTIL_H
#define BP_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* "<dir>/bp-fuzz-<pid>-<tag>": one name per process and role, reused for every input. */
static inline const char *fuzz_path(const char *tag) {
    static char paths[4][256];
    static int used;
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    char want[256];
    snprintf(want, sizeof want, "%s/bp-fuzz-%ld-%s", dir, (long)getpid(), tag);
    for (int i = 0; i < used; ++i)
        if (strcmp(paths[i], want) == 0) return paths[i];
    if (used == 4) abort(); /* a target uses at most four files */
    memcpy(paths[used], want, sizeof want);
    return paths[used++];
}

/* Writes n bytes to the file named by tag; its path. Aborts when the disk fails: that is the
 * harness's fault, not the code under test's, and must not pass silently. */
static inline const char *fuzz_write(const char *tag, const uint8_t *data, size_t n) {
    const char *path = fuzz_path(tag);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) abort();
    return path;
}

/* Splits an input in two files: the first two bytes (little-endian) give the first part's
 * length, clamped to what is there; the rest is the second part. */
static inline void fuzz_split(const uint8_t *data, size_t size, const uint8_t **a, size_t *na,
                              const uint8_t **b, size_t *nb) {
    size_t cut = size >= 2 ? (size_t)data[0] | (size_t)data[1] << 8 : 0;
    data += size >= 2 ? 2 : size;
    size -= size >= 2 ? 2 : size;
    if (cut > size) cut = size;
    *a = data, *na = cut, *b = data + cut, *nb = size - cut;
}

#endif
