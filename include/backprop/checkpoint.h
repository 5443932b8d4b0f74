/* Checkpoints in the safetensors format.
 *
 * Tensors (all F32) are named like the state_dict of the equivalent PyTorch nn.Sequential: each
 * layer is an nn.Linear, followed by its activation module (none for identity) and an
 * nn.Dropout when its probability is above 0, so a 784-512-10 ReLU model with dropout 0.2 on
 * the hidden layer writes "0.weight" [512, 784], "0.bias" [512], "3.weight", "3.bias".
 * A layer's norm (bp_mlp_config.norms) is a module of its own before its Linear ("4.weight",
 * "4.bias" of an nn.LayerNorm); a residual layer is one module whose nn.Sequential "body" holds
 * its norm, Linear, activation and dropout ("2.body.0.weight", "2.body.1.weight"): the module
 * of docs/deep-mlp.md. Such a model also writes model.norms (none, layernorm, rmsnorm),
 * model.norm_eps and model.residual (0/1 per layer); a file without them has none.
 *
 * Optimizer state is written per parameter under "optimizer.", with PyTorch's state names:
 * "optimizer.<param>.momentum_buffer" for SGD with momentum, "optimizer.<param>.exp_avg" and
 * "optimizer.<param>.exp_avg_sq" for Adam and AdamW (e.g. "optimizer.3.weight.exp_avg");
 * plain SGD has none. Caller arrays (bp_checkpoint_save_arrays) are 1-D tensors "run.<name>".
 * Drop the "optimizer." and "run." keys before load_state_dict.
 *
 * String metadata ("__metadata__"); floats printed with %.9g so they read back exactly:
 *   format "backprop-checkpoint", version "1"
 *   model.n_layers "2", model.widths "784,512,10", model.activations "relu,identity" (identity,
 *   relu, leaky_relu, sigmoid, tanh, gelu, gelu_tanh, silu), model.dropout "0.200000003,0",
 *   model.leaky_slope, model.seed, model.rng_counter (bp_model_rng_counter), model.max_batch,
 *   model.precision (fp32, tf32, bf16; absent in older files, which are fp32). The tensors are
 *   F32 in every precision (the fp32 master weights).
 *   with an optimizer: optimizer.kind (sgd, adam, adamw), optimizer.lr, .momentum, .dampening,
 *   .nesterov (0/1), .weight_decay, .beta1, .beta2, .eps, .clip_norm, .clip_value,
 *   .accum_steps, optimizer.schedule.kind (constant, step, cosine, plateau), optimizer.schedule.
 *   warmup_steps, .step_size, .gamma, .total_steps, .min_lr, and optimizer.steps; with the
 *   plateau schedule also optimizer.schedule.mode (min, max), .threshold, .threshold_mode (rel,
 *   abs), .patience, .cooldown, .eps and its state optimizer.plateau.best (a number, inf or
 *   -inf), .bad_epochs, .cooldown_left (optimizer.lr is then the rate it has lowered to)
 *   the caller's entries: run.<key>
 * Every name is the one bp_<enum>_name gives (bp_activation_name, bp_precision_name,
 * bp_optim_kind_name, ...).
 * The initial-weight scheme is not recorded: a loaded model has its weights.
 *
 * Saving is atomic: the file is written beside the target (unnamed where the filesystem has
 * O_TMPFILE, else as "<path>.tmp.<pid>"), flushed with fsync, renamed over the target and the
 * directory fsync'd, so a crash or a full disk never leaves a truncated checkpoint, and on
 * failure the previous file is untouched and the temporary file removed. A save first removes
 * the "<path>.tmp.<pid>" files of a writer that no longer runs (one killed mid-save). (Two
 * threads of one process must not save to the same path at once.)
 *
 * Checksums: the writer adds a CRC-32 (zlib's) of every tensor's bytes and of every metadata
 * entry (its key, a NUL byte and its value) as metadata, "checksum.tensor.<name>" and
 * "checksum.meta.<key>", each "crc32:<8 hex digits>". Every load checks the metadata entries
 * and the tensors it reads against them, and bp_checkpoint_verify the whole file: a byte
 * changed after saving is BP_ERR_CORRUPT_FILE naming the tensor or key. Files saved before
 * checksums existed (no "checksum." entry) load as before, unverified.
 *
 * Loading checks the file against itself and the metadata (every tensor present, with the shape
 * the widths imply, nothing unexpected) and names the file and the tensor or key on failure:
 * BP_ERR_IO for the file system, BP_ERR_CORRUPT_FILE for the content, BP_ERR_UNSUPPORTED for a
 * newer format version or checksum algorithm.
 *
 * Two ways to read: a handle (bp_checkpoint_open) parses the file once and then hands out the
 * model, the optimizer, the entries and the arrays, each read and checked when asked for; the
 * calls by path (bp_checkpoint_load_model, _get_meta, ...) open, read one thing and close, and
 * suit a program that wants one thing once.
 *
 * Lifetime: what a handle hands out by pointer (entries, names, the model's config arrays) is
 * owned by it and valid until bp_checkpoint_close; models, optimizers and arrays it reads are the
 * caller's and outlive it. Threads: a handle is used by one thread at a time; handles (and path
 * calls) on different threads do not interact, except that two threads must not save to one
 * path at once. */
#ifndef BACKPROP_CHECKPOINT_H
#define BACKPROP_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One caller metadata entry, stored as the safetensors metadata key "run.<key>". Keys must be
 * non-empty and distinct; keys and values valid UTF-8. */
typedef struct bp_meta_entry {
    const char *key;
    const char *value;
} bp_meta_entry;

/* One caller float array (e.g. the feature scaling), stored as the F32 tensor "run.<name>"
 * [count]. Names must be non-empty and distinct. */
typedef struct bp_meta_array {
    const char *name;
    const float *values;
    size_t count;
} bp_meta_array;

/* Writes model (and optimizer, when not NULL; it must belong to model) to path atomically. */
BP_API bp_status bp_checkpoint_save(const char *path, const bp_model *model,
                                    const bp_optimizer *optimizer, const bp_meta_entry *meta,
                                    size_t n_meta);

/* bp_checkpoint_save, with float arrays as well. */
BP_API bp_status bp_checkpoint_save_arrays(const char *path, const bp_model *model,
                                           const bp_optimizer *optimizer, const bp_meta_entry *meta,
                                           size_t n_meta, const bp_meta_array *arrays,
                                           size_t n_arrays);

/* A model rebuilt from a checkpoint on device, with its weights, dropout counter and precision;
 * the workspace is sized for max_batch rows (<= 0: the max_batch it was saved with). NULL and
 * *status on failure. */
BP_API bp_model *bp_checkpoint_load_model(const char *path, bp_device *device, int max_batch,
                                          bp_status *status);

/* An optimizer for model with the configuration, state and step count from the checkpoint.
 * model must have the checkpoint's widths (e.g. from bp_checkpoint_load_model). A checkpoint
 * saved without an optimizer gives NULL and BP_ERR_INVALID_ARGUMENT. */
BP_API bp_optimizer *bp_checkpoint_load_optimizer(const char *path, bp_model *model,
                                                  bp_status *status);

/* The caller metadata entry key (without "run."), as a malloc'd string the caller frees;
 * NULL with BP_OK in *status when the checkpoint has no such entry. */
BP_API char *bp_checkpoint_get_meta(const char *path, const char *key, bp_status *status);

/* The caller array name (without "run.") as a malloc'd copy the caller frees, its length in
 * *count; NULL with BP_OK in *status (and *count 0) when the checkpoint has no such array. */
BP_API float *bp_checkpoint_get_array(const char *path, const char *name, size_t *count,
                                      bp_status *status);

/* Checks every tensor and metadata entry of the checkpoint at path against its checksum.
 * BP_OK when all match (*verified = 1) or the file has no checksums (*verified = 0: saved
 * before they existed); BP_ERR_CORRUPT_FILE naming the first tensor or key that does not
 * match, BP_ERR_IO when it cannot be read. verified may be NULL. */
BP_API bp_status bp_checkpoint_verify(const char *path, int *verified);

/* ---- a checkpoint opened once ---------------------------------------------------------------
 * Handle calls name themselves and the file in messages; a NULL handle or pointer argument is
 * BP_ERR_INVALID_ARGUMENT (getters return 0, NULL or ""). */
typedef struct bp_checkpoint bp_checkpoint;

/* Opens path: parses the header and the metadata, checks every metadata entry against its
 * checksum and that this is a checkpoint this library reads (format and version). The
 * tensors are read and checked when asked for. NULL and *status on failure (BP_ERR_IO,
 * BP_ERR_CORRUPT_FILE, BP_ERR_UNSUPPORTED, as the loads above). */
BP_API bp_checkpoint *bp_checkpoint_open(const char *path, bp_status *status);
BP_API void bp_checkpoint_close(bp_checkpoint *checkpoint); /* NULL is allowed */
BP_API const char *bp_checkpoint_path(const bp_checkpoint *checkpoint);

/* The model the metadata describes, as the config bp_model_create would take (init is the
 * default: the scheme is not recorded, the weights are), without building it. Its arrays are
 * the handle's. BP_ERR_CORRUPT_FILE when the model's metadata is bad. */
BP_API bp_status bp_checkpoint_model_config(bp_checkpoint *checkpoint, bp_mlp_config *config);

/* bp_checkpoint_load_model and bp_checkpoint_load_optimizer on an open handle. */
BP_API bp_model *bp_checkpoint_read_model(bp_checkpoint *checkpoint, bp_device *device,
                                          int max_batch, bp_status *status);
BP_API bp_optimizer *bp_checkpoint_read_optimizer(bp_checkpoint *checkpoint, bp_model *model,
                                                  bp_status *status);

/* 1 when the checkpoint holds an optimizer (0 for NULL). */
BP_API int bp_checkpoint_has_optimizer(const bp_checkpoint *checkpoint);

/* The optimizer's configuration as saved (a plateau's rate as lowered so far) and its step
 * count (steps may be NULL), without building it. BP_ERR_INVALID_ARGUMENT when the checkpoint
 * holds none, BP_ERR_CORRUPT_FILE for bad metadata. */
BP_API bp_status bp_checkpoint_optim_config(bp_checkpoint *checkpoint, bp_optim_config *config,
                                            int64_t *steps);

/* The caller's entries (run.<key>), in key order (strcmp): how many, entry `index` (key without
 * "run."; {NULL, NULL} out of range), and the value of key (NULL when absent). */
BP_API size_t bp_checkpoint_n_meta(const bp_checkpoint *checkpoint);
BP_API bp_meta_entry bp_checkpoint_meta_at(const bp_checkpoint *checkpoint, size_t index);
BP_API const char *bp_checkpoint_meta(const bp_checkpoint *checkpoint, const char *key);

/* The caller's arrays (run.<name>), in name order: how many, the name of array `index` (NULL
 * out of range), and bp_checkpoint_get_array on the handle (a malloc'd copy, checked against
 * its checksum; NULL with BP_OK and *count 0 when absent). */
BP_API size_t bp_checkpoint_n_arrays(const bp_checkpoint *checkpoint);
BP_API const char *bp_checkpoint_array_name(const bp_checkpoint *checkpoint, size_t index);
BP_API float *bp_checkpoint_read_array(bp_checkpoint *checkpoint, const char *name, size_t *count,
                                       bp_status *status);

/* bp_checkpoint_verify on an open handle: every tensor against its checksum. */
BP_API bp_status bp_checkpoint_check(bp_checkpoint *checkpoint, int *verified);

/* A parameter tensor of a model as a checkpoint names it (above). */
typedef struct bp_param_tensor {
    char name[64];    /* "0.weight", "3.bias" (a norm), "2.body.1.weight" (a residual's Linear) */
    int ndim;         /* 2 for a Linear's weight [out, in], 1 for a bias or a norm's vector */
    int64_t shape[2]; /* shape[1] is 1 when ndim is 1 */
    size_t offset;    /* floats into the flat parameter buffer (bp_model_get_params) */
} bp_param_tensor;

/* The model's parameter tensors, in the order of its flat buffer: how many (0 for NULL), and
 * tensor `index` (BP_ERR_INVALID_ARGUMENT for NULL or an index out of range). */
BP_API int bp_checkpoint_n_tensors(const bp_model *model);
BP_API bp_status bp_checkpoint_tensor(const bp_model *model, int index, bp_param_tensor *out);

#ifdef __cplusplus
}
#endif

#endif
