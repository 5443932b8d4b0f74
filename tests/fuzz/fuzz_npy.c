/* libFuzzer: bp_dataset_load_npy on a features file and a targets file (see fuzz_split); the
 * first byte after the split picks the target kind; no targets file: features alone. */
#include <stdlib.h>

#include "backprop/backprop.h"
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
