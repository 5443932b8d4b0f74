/* libFuzzer: bp_dataset_load_idx on an images file and a labels file (see fuzz_split). */
#include <stdlib.h>

#include "backprop/backprop.h"
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
