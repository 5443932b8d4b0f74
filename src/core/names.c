/* Names of the core's enums (device, tensor, model, loss, optimizer), each spelled once, as
 * checkpoints write them. The data enums' tables are in src/io/data_names.c. Each BP_NAME_PAIR
 * defines bp_<enum>_name and bp_<enum>_parse, declared beside the enum in its header. */
#include "core/names.h"

#include <stdio.h>
#include <string.h>

#include "backprop/device.h"
#include "backprop/loss.h"
#include "backprop/model.h"
#include "backprop/optim.h"
#include "backprop/tensor.h"
#include "core/error.h"

const char *bp_name_of(const bp_name_table *t, int value) {
    return value >= 0 && value < t->n ? t->names[value] : "";
}

int bp_name_find(const bp_name_table *t, const char *text) {
    for (int k = 0; text && k < t->n; ++k)
        if (strcmp(text, t->names[k]) == 0) return k;
    return -1;
}

void bp_name_list(const bp_name_table *t, const char *last_sep, char *buf, size_t size) {
    size_t at = 0;
    buf[0] = '\0';
    for (int k = 0; k < t->n && at < size; ++k) {
        const char *sep = k == 0 ? "" : k + 1 == t->n ? last_sep : ", ";
        at += (size_t)snprintf(buf + at, size - at, "%s%s", sep, t->names[k]);
    }
}

bp_status bp_parse_name(const char *fn, const bp_name_table *t, const char *text, int *out) {
    if (!text || !out)
        return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, text ? "out" : "text");
    int k = bp_name_find(t, text);
    if (k >= 0) {
        *out = k;
        return BP_OK;
    }
    char list[256];
    bp_name_list(t, ", ", list, sizeof list);
    return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: '%.64s' is not %s (%s)", fn, text, t->what, list);
}

BP_NAME_TABLE(bp_names_device_kind, "a device kind", "cpu", "cuda");
BP_NAME_TABLE(bp_names_dtype, "a dtype", "f32", "i32");
BP_NAME_TABLE(bp_names_activation, "an activation", "identity", "relu", "leaky_relu", "sigmoid",
              "tanh", "gelu", "gelu_tanh", "silu");
BP_NAME_TABLE(bp_names_init, "an init scheme", "torch_default", "he_uniform", "he_normal",
              "xavier_uniform", "xavier_normal");
BP_NAME_TABLE(bp_names_norm, "a norm", "none", "layernorm", "rmsnorm");
BP_NAME_TABLE(bp_names_mode, "a mode", "inference", "training");
BP_NAME_TABLE(bp_names_precision, "a precision", "fp32", "tf32", "bf16");
BP_NAME_TABLE(bp_names_predict_output, "a prediction output", "logits", "softmax", "sigmoid",
              "class");
BP_NAME_TABLE(bp_names_loss_kind, "a loss", "mse", "ce", "bce");
BP_NAME_TABLE(bp_names_optim_kind, "an optimizer", "sgd", "adam", "adamw");
BP_NAME_TABLE(bp_names_schedule_kind, "a schedule", "constant", "step", "cosine", "plateau");
BP_NAME_TABLE(bp_names_plateau_mode, "a plateau mode", "min", "max");
BP_NAME_TABLE(bp_names_threshold_mode, "a threshold mode", "rel", "abs");

BP_NAME_PAIR(bp_device_kind, bp_names_device_kind)
BP_NAME_PAIR(bp_dtype, bp_names_dtype)
BP_NAME_PAIR(bp_activation, bp_names_activation)
BP_NAME_PAIR(bp_init, bp_names_init)
BP_NAME_PAIR(bp_norm, bp_names_norm)
BP_NAME_PAIR(bp_mode, bp_names_mode)
BP_NAME_PAIR(bp_precision, bp_names_precision)
BP_NAME_PAIR(bp_predict_output, bp_names_predict_output)
BP_NAME_PAIR(bp_loss_kind, bp_names_loss_kind)
BP_NAME_PAIR(bp_optim_kind, bp_names_optim_kind)
BP_NAME_PAIR(bp_schedule_kind, bp_names_schedule_kind)
BP_NAME_PAIR(bp_plateau_mode, bp_names_plateau_mode)
BP_NAME_PAIR(bp_threshold_mode, bp_names_threshold_mode)
