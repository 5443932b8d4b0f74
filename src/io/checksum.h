/* Checksums that let a checkpoint verify itself: a CRC-32 (zlib's) of every tensor's bytes and
 * of every metadata entry, stored as metadata next to them (PyTorch's safetensors loader
 * ignores metadata):
 *   "checksum.tensor.<name>" = "crc32:<8 hex digits>"  the tensor's data bytes
 *   "checksum.meta.<key>"    = "crc32:<8 hex digits>"  the key, a NUL byte, the value
 * Every metadata entry is covered whatever its key, so entries added by later versions need
 * nothing here. A file without any "checksum." entry predates them and is unverified; in a file
 * with them, an entry or tensor without its checksum, a checksum without its entry or tensor,
 * and a mismatch are BP_ERR_CORRUPT_FILE naming the tensor or key. Unknown "checksum.*" kinds
 * are left to the versions that write them. */
#ifndef BP_IO_CHECKSUM_H
#define BP_IO_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"

#define BP_CKSUM_PREFIX "checksum."
#define BP_CKSUM_TENSOR "checksum.tensor."
#define BP_CKSUM_META   "checksum.meta."
#define BP_CKSUM_TEXT   16 /* "crc32:xxxxxxxx" and its NUL */

/* CRC-32 of n bytes continuing crc (0 to start). */
uint32_t bp_cksum_bytes(uint32_t crc, const void *data, uint64_t n);
/* CRC-32 of a metadata entry: key, NUL, value. */
uint32_t bp_cksum_meta(const char *key, const char *value);
/* "crc32:%08x" into out. */
void bp_cksum_text(uint32_t crc, char out[BP_CKSUM_TEXT]);

/* Whether the file carries checksums. */
int bp_cksum_present(const bp_st_file *f);
/* Checks every metadata entry and the pairing of tensors with their checksums. */
bp_status bp_cksum_check_meta(const bp_st_file *f);
/* bp_st_read, then the bytes against the tensor's checksum (when the file has checksums). */
bp_status bp_cksum_read(bp_st_file *f, const bp_st_tensor *t, void *dst, size_t bytes);
/* Reads every tensor in pieces and checks it. */
bp_status bp_cksum_check_tensors(bp_st_file *f);

#endif
