/* libFuzzer: a safetensors checkpoint through every reader: the checksums, the model, the
 * optimizer, a metadata key and a float array. */
#include <stdlib.h>

#include "backprop/backprop.h"
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
