/* Checkpoints in the safetensors format.
 *
 * Tensors are named like the state_dict of the equivalent PyTorch nn.Sequential: each layer is
 * an nn.Linear, followed by its activation module (none for identity) and an nn.Dropout when
 * its probability is above 0, so a 784-512-10 ReLU model with dropout 0.2 on the hidden layer
 * writes "0.weight", "0.bias", "3.weight", "3.bias". Optimizer state is written as tensors
 * under "optimizer." (filter them out before load_state_dict). The model configuration, the
 * optimizer configuration and step, the dropout counter and the caller's own entries are
 * string metadata.
 *
 * Saving is atomic: the file is written beside the target, flushed with fsync and renamed
 * over it, so a crash or a full disk never leaves a truncated checkpoint, and on failure the
 * previous file is untouched. */
#ifndef BACKPROP_CHECKPOINT_H
#define BACKPROP_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One caller metadata entry, stored as the safetensors metadata key "run.<key>". */
typedef struct bp_meta_entry {
    const char *key;
    const char *value;
} bp_meta_entry;

/* Writes model (and optimizer, when not NULL) to path atomically. */
BP_API bp_status bp_checkpoint_save(const char *path, const bp_model *model,
                                    const bp_optimizer *optimizer, const bp_meta_entry *meta,
                                    size_t n_meta);

/* A model rebuilt from a checkpoint on device, with its weights and dropout counter; the
 * workspace is sized for max_batch rows. NULL and *status on failure. */
BP_API bp_model *bp_checkpoint_load_model(const char *path, bp_device *device, int max_batch,
                                          bp_status *status);

/* An optimizer for model with the configuration, state and step count from the checkpoint. */
BP_API bp_optimizer *bp_checkpoint_load_optimizer(const char *path, bp_model *model,
                                                  bp_status *status);

/* The caller metadata entry key (without "run."), as a malloc'd string the caller frees;
 * NULL with BP_OK in *status when the checkpoint has no such entry. */
BP_API char *bp_checkpoint_get_meta(const char *path, const char *key, bp_status *status);

#ifdef __cplusplus
}
#endif

#endif
