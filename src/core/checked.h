/* Checked arithmetic for sizes that come from outside: a file's header, a caller's shape.
 * Every product of such numbers goes through bp_mul_u64 before it is compared with a cap, so a
 * product that wraps (a shape of (2^32 + 65536, 2^32 - 65535) is 2^64 + 65536 elements, 65536
 * after wrapping) is refused, never taken for a small one. */
#ifndef BP_CORE_CHECKED_H
#define BP_CORE_CHECKED_H

#include <stdbool.h>
#include <stdint.h>

/* *out = a * b; false, *out unspecified, when the product does not fit in 64 bits. */
static inline bool bp_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

#endif
