/* Names of the data enums (data.h), each spelled once; the core's are in src/core/names.c.
 * Each BP_NAME_PAIR defines bp_<enum>_name and bp_<enum>_parse. */
#include "backprop/data.h"
#include "core/names.h"

BP_NAME_TABLE(bp_names_target_kind, "a target kind", "class", "values", "none");
BP_NAME_TABLE(bp_names_csv_target, "a CSV target kind", "class_index", "one_hot", "values",
              "class_name", "class_auto", "no_targets");
BP_NAME_TABLE(bp_names_scaling_kind, "a scaling", "none", "minmax", "standard", "global");
BP_NAME_TABLE(bp_names_data_format, "a data format", "auto", "csv", "npy", "idx");
BP_NAME_TABLE(bp_names_data_hint, "a data hint", "none", "delimiter", "values", "class_names",
              "classes", "class_count", "identifiers");

BP_NAME_PAIR(bp_target_kind, bp_names_target_kind)
BP_NAME_PAIR(bp_csv_target, bp_names_csv_target)
BP_NAME_PAIR(bp_scaling_kind, bp_names_scaling_kind)
BP_NAME_PAIR(bp_data_format, bp_names_data_format)
BP_NAME_PAIR(bp_data_hint, bp_names_data_hint)
