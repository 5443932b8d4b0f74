/* Losses. Each is the mean over its elements, as PyTorch's reduction="mean":
 *   BP_LOSS_MSE:          mean over all rows*cols of (out - target)^2; target F32 [batch, out].
 *   BP_LOSS_CROSS_ENTROPY: softmax over each row, then mean over rows of -sum_j q_j log p_j,
 *                          q = (1 - s) onehot(label) + s / classes (label smoothing s);
 *                          target I32 [batch, 1] class indices in [0, classes).
 *   BP_LOSS_BCE_LOGITS:   sigmoid + binary cross-entropy, mean over rows*cols; target F32 in
 *                          [0, 1], [batch, out]. */
#ifndef BACKPROP_LOSS_H
#define BACKPROP_LOSS_H

#include "export.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bp_loss_kind {
    BP_LOSS_MSE = 0,
    BP_LOSS_CROSS_ENTROPY = 1,
    BP_LOSS_BCE_LOGITS = 2
} bp_loss_kind;

/* "mse", "ce", "bce" (the name and parse pair of device.h). */
BP_API const char *bp_loss_kind_name(bp_loss_kind kind);
BP_API bp_status bp_loss_kind_parse(const char *text, bp_loss_kind *out);

typedef struct bp_loss_config {
    bp_loss_kind kind;
    float label_smoothing; /* cross-entropy only, in [0, 1] */
} bp_loss_config;

#ifdef __cplusplus
}
#endif

#endif
