/* The public name and parse pair of every enum: one table per enum, one spelling per value. */
#ifndef BP_CORE_NAMES_H
#define BP_CORE_NAMES_H

#include <stddef.h>

#include "backprop/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An enum's names, value k at names[k]; `what` names the enum in messages ("an activation"). */
typedef struct bp_name_table {
    const char *const *names;
    int n;
    const char *what;
} bp_name_table;

/* The tables (src/core/names.c, src/io/data_names.c); the checkpoint reads and writes through
 * them too. */
extern const bp_name_table bp_names_device_kind, bp_names_dtype, bp_names_activation, bp_names_init,
    bp_names_norm, bp_names_mode, bp_names_precision, bp_names_predict_output, bp_names_loss_kind,
    bp_names_optim_kind, bp_names_schedule_kind, bp_names_plateau_mode, bp_names_threshold_mode,
    bp_names_target_kind, bp_names_csv_target, bp_names_scaling_kind, bp_names_data_format,
    bp_names_data_hint;

/* names[value], or "" outside the table. */
const char *bp_name_of(const bp_name_table *t, int value);

/* The index of text in the table, or -1 (text may be NULL). */
int bp_name_find(const bp_name_table *t, const char *text);

/* "a, b or c": the table's names, for messages; truncated to size. */
void bp_name_list(const bp_name_table *t, const char *last_sep, char *buf, size_t size);

/* *out = the index of text in the table. fn names the call in the message ("'x' is not an
 * activation (identity, relu, ...)"); *out is unchanged on failure. */
bp_status bp_parse_name(const char *fn, const bp_name_table *t, const char *text, int *out);

/* The public pair of one enum over its table: type##_name and type##_parse. */
#define BP_NAME_PAIR(type, table)                                                                  \
    const char *type##_name(type value) {                                                          \
        return bp_name_of(&(table), (int)value);                                                   \
    }                                                                                              \
    bp_status type##_parse(const char *text, type *out) {                                          \
        int k = 0;                                                                                 \
        bp_status st = bp_parse_name(#type "_parse", &(table), text, out ? &k : NULL);             \
        if (st == BP_OK) *out = (type)k;                                                           \
        return st;                                                                                 \
    }

/* A table's definition: BP_NAME_TABLE(bp_names_x, "an x", "a", "b"); */
#define BP_NAME_TABLE(id, what, ...)                                                               \
    static const char *const id##_names_[] = {__VA_ARGS__};                                        \
    const bp_name_table id = {id##_names_, (int)(sizeof id##_names_ / sizeof id##_names_[0]), what}

#ifdef __cplusplus
}
#endif

#endif
