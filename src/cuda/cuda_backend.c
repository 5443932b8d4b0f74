/* The CUDA backend's table, and the entry point of the module libbackprop_cuda.so that hands it
 * to the core (core/module.h). Every entry is implemented, except the collectives in a build
 * without NCCL; semantics are those documented in core/backend.h, the same as the CPU
 * backend's. */
#include "backprop/version.h"
#include "cuda/cuda_internal.h"

/* What the module was built against, for bp_build_info (set by CMake). */
#ifndef BP_CUDA_MODULE_DETAIL
#define BP_CUDA_MODULE_DETAIL "CUDA"
#endif

static const bp_backend_ops bp_cuda_ops = {
    .name = "cuda",
    .init = bp_cuda_init,
    .destroy = bp_cuda_destroy,
    .device_count = bp_cuda_device_count,
    .alloc = bp_cuda_alloc,
    .free = bp_cuda_free,
    .upload = bp_cuda_upload,
    .download = bp_cuda_download,
    .copy = bp_cuda_copy,
    .fill = bp_cuda_fill,
    .synchronize = bp_cuda_synchronize,
    .memory_free = bp_cuda_memory_free,
    .gemm = bp_cuda_gemm,
    .bias_act_forward = bp_cuda_bias_act_forward,
    .act_backward = bp_cuda_act_backward,
    .col_sum = bp_cuda_col_sum,
    .softmax = bp_cuda_softmax,
    .softmax_xent = bp_cuda_softmax_xent,
    .class_match = bp_cuda_class_match,
    .mse = bp_cuda_mse,
    .bce_logits = bp_cuda_bce_logits,
    .check_labels = bp_cuda_check_labels,
    .sum = bp_cuda_sum,
    .sum_squares = bp_cuda_sum_squares,
    .dropout = bp_cuda_dropout,
    .update = bp_cuda_update,
    .counters = bp_cuda_counters,
    .check_labels_into = bp_cuda_check_labels_into,
    .step_decide = bp_cuda_step_decide,
    .loss_head = bp_cuda_loss_head,
    .norm_decide = bp_cuda_norm_decide,
    .host_alloc = bp_cuda_host_alloc,
    .host_free = bp_cuda_host_free,
    .download_async = bp_cuda_download_async,
    .upload_async = bp_cuda_upload_async,
    .graph_begin = bp_cuda_graph_begin,
    .graph_end = bp_cuda_graph_end,
    .graph_launch = bp_cuda_graph_launch,
    .graph_free = bp_cuda_graph_free,
    .mark_create = bp_cuda_mark_create,
    .mark_free = bp_cuda_mark_free,
    .mark_record = bp_cuda_mark_record,
    .mark_done = bp_cuda_mark_done,
    .gemm_ex = bp_cuda_gemm_ex,
    .gemm_plan = bp_cuda_gemm_plan,
    .gemm_plan_free = bp_cuda_gemm_plan_free,
    .cast = bp_cuda_cast,
    .bias_act_forward_ex = bp_cuda_bias_act_forward_ex,
    .act_backward_ex = bp_cuda_act_backward_ex,
    .norm_forward = bp_cuda_norm_forward,
    .norm_backward = bp_cuda_norm_backward,
    .add = bp_cuda_add,
#ifdef BP_HAVE_NCCL
    .coll_id = bp_cuda_coll_id,
    .coll_init = bp_cuda_coll_init,
    .coll_sum = bp_cuda_coll_sum,
    .coll_free = bp_cuda_coll_free,
#endif
};

static const bp_backend_module bp_cuda_module = {
    .header = {BP_MODULE_ABI, BP_VERSION_STRING, BP_CUDA_MODULE_DETAIL},
    .ops = &bp_cuda_ops,
};

BP_API const void *bp_cuda_module_entry(const bp_module_host *host);

const void *bp_cuda_module_entry(const bp_module_host *host) {
    return bp_module_bind(host) ? &bp_cuda_module : NULL;
}
