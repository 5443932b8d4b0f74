/* libFuzzer: bp_dataset_load_csv. The first byte picks the options (delimiter, header, target
 * kind, which target column, class names given for name labels); the rest is the file. */
#include <stdlib.h>

#include "backprop/backprop.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const char delims[] = {0, ',', ';', '\t'};
    static const char *const targets[] = {NULL, "0", "-1", "label", "y1,y2", "1,2", "-9", "x"};
    bp_csv_options o = bp_csv_options_default();
    o.delimiter = delims[data[0] & 3];
    o.header = (int)((data[0] >> 2) % 3) - 1;
    o.target_kind = (bp_csv_target)((data[0] >> 4) % 6);
    o.targets = targets[(data[0] >> 5) & 7];
    if (o.target_kind == BP_CSV_NO_TARGETS && !(data[0] & 1)) o.targets = NULL; /* else refused */
    static const char *const names[] = {"b", "a", "1", "label"};
    if ((o.target_kind == BP_CSV_CLASS_NAME || o.target_kind == BP_CSV_CLASS_AUTO) &&
        (data[0] & 1)) {
        o.class_names = names;
        o.n_class_names = 4;
    }
    const char *path = fuzz_write("data.csv", data + 1, size - 1);
    bp_status st = BP_OK;
    bp_dataset *d = bp_dataset_load_csv(path, &o, &st);
    if (!d != (st != BP_OK) || (!d && !bp_last_error()[0])) abort();
    bp_dataset_free(d);
    return 0;
}
