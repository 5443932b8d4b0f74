/* CUDA graphs of the device's stream: a training step recorded once (stream capture) and
 * replayed with one cudaGraphLaunch (docs/design.md, "A step that does not wait"). */
#include "cuda/cuda_internal.h"

bp_status bp_cuda_graph_begin(bp_device *device) {
    BP_CUDA_ENTER(device);
    /* Global mode: any call that would wait for or allocate on the device while the step is
     * recorded fails at once, instead of being recorded wrong. */
    BP_CUDA_TRY(
        device,
        cudaStreamBeginCapture(bp_cuda_impl_of(device)->stream, cudaStreamCaptureModeGlobal),
        "cudaStreamBeginCapture(global)");
    bp_cuda_impl_of(device)->recording = 1;
    return BP_OK;
}

/* A new executable graph for g, or *exec updated in place when only its nodes' arguments
 * changed (cheaper than instantiating). */
static cudaError_t make_exec(cudaGraph_t g, void **exec) {
    if (*exec) {
        cudaGraphExecUpdateResultInfo info;
        if (cudaGraphExecUpdate((cudaGraphExec_t)*exec, g, &info) == cudaSuccess)
            return cudaSuccess;
        (void)cudaGetLastError();
        cudaGraphExecDestroy((cudaGraphExec_t)*exec);
        *exec = NULL;
    }
    cudaGraphExec_t e = NULL;
    cudaError_t err = cudaGraphInstantiate(&e, g, 0);
    if (err == cudaSuccess) *exec = e;
    return err;
}

bp_status bp_cuda_graph_end(bp_device *device, void **exec) {
    BP_CUDA_ENTER(device);
    cudaGraph_t g = NULL;
    bp_cuda_impl_of(device)->recording = 0;
    cudaError_t err = cudaStreamEndCapture(bp_cuda_impl_of(device)->stream, &g);
    if (err == cudaSuccess) err = make_exec(g, exec);
    if (g) cudaGraphDestroy(g);
    if (err != cudaSuccess && *exec) {
        cudaGraphExecDestroy((cudaGraphExec_t)*exec);
        *exec = NULL;
    }
    BP_CUDA_TRY(device, err, "recording the training step as a CUDA graph");
    return BP_OK;
}

bp_status bp_cuda_graph_launch(bp_device *device, void *exec) {
    BP_CUDA_ENTER(device);
    bp_cuda_impl_of(device)->counters.graph_launches++;
    BP_CUDA_TRY(device, cudaGraphLaunch((cudaGraphExec_t)exec, bp_cuda_impl_of(device)->stream),
                "cudaGraphLaunch");
    return BP_OK;
}

void bp_cuda_graph_free(bp_device *device, void *exec) {
    if (!exec || bp_cuda_enter(device) != BP_OK) return;
    if (cudaGraphExecDestroy((cudaGraphExec_t)exec) != cudaSuccess) (void)cudaGetLastError();
}
