/* Data-parallel training over MPI processes: one process per device, one model replica each.
 *
 * Every rank builds the same model, calls bp_comm_attach, then calls bp_train_step with its own
 * shard of each global batch (rank r of N takes rows [B*r/N, B*(r+1)/N) of a batch of B rows,
 * bp_comm_shard). The step scales each rank's loss gradient by 1 / B (the global rows, found
 * with one small all-gather that also tells every rank when another rank's arguments failed),
 * sums the flat gradient buffer over the ranks with one all-reduce, and then every rank runs the
 * same optimizer step on the same gradients, so the replicas stay bitwise identical (as long as
 * the sum gives every rank the same bits, which Open MPI's and NCCL's do; the MPI standard
 * only recommends it). Dropout
 * keys its masks by the row's place in the global batch, so a run on N ranks draws the masks
 * one process would.
 *
 * The gradient sum runs on MPI_Allreduce over host memory on the CPU, and on ncclAllReduce on
 * the device's stream for a CUDA device when the library was built with NCCL (BP_NCCL); a CUDA
 * device without NCCL stages through host memory.
 *
 * x and target of bp_train_step hold only this rank's rows (at least accum_steps of them); the
 * loss it returns is the mean over the global batch, the same on every rank.
 *
 * Every call here that talks to other ranks is collective: all ranks make it, in the same order.
 * When one rank's arguments fail, every rank returns an error (the others name the rank), so no
 * rank is left waiting. A rank that dies makes MPI end the job (mpirun kills the others).
 *
 * Without MPI (built with BP_MPI=OFF) bp_comm_create fails with BP_ERR_UNSUPPORTED.
 *
 * Lifetime: a comm outlives the training of the models attached to it. Threads: a comm is
 * used by one thread at a time, as MPI's own calls are by a program that initialised it so. */
#ifndef BACKPROP_DISTRIBUTED_H
#define BACKPROP_DISTRIBUTED_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_comm bp_comm;

/* 1 when the library was built with MPI (BP_MPI), 0 otherwise. */
BP_API int bp_distributed_available(void);

/* The group of all processes of the MPI job (MPI_COMM_WORLD). Initialises MPI when the caller
 * has not, and then finalizes it in bp_comm_free, so that comm must be freed after any other
 * (and MPI cannot start again in the process). Collective. NULL and *status on failure. */
BP_API bp_comm *bp_comm_create(bp_status *status);
BP_API void bp_comm_free(bp_comm *comm);

BP_API int bp_comm_rank(const bp_comm *comm);
BP_API int bp_comm_size(const bp_comm *comm);

/* This process's index among the ranks on its host: the GPU it should use ("cuda:<local>"). */
BP_API int bp_comm_local_rank(const bp_comm *comm);

/* Rows [*first, *first + *count) of a global batch of `rows` rows belong to this rank. */
BP_API void bp_comm_shard(const bp_comm *comm, int64_t rows, int64_t *first, int64_t *count);

/* Makes model (and optimizer, when not NULL) one replica of the group: checks that every rank
 * built the same architecture (layer widths, activations, dropout, optimizer kind and
 * accumulation) and fails on every rank, naming the first rank that differs, when not; then
 * copies rank 0's parameters, dropout counter, optimizer state and step count to every rank.
 * For a CUDA model built with NCCL it sets up the NCCL communicator (its id sent over MPI); one
 * comm serves models on one device. From then on bp_train_step on model is a data-parallel
 * step; the comm must outlive the model's training. Collective. */
BP_API bp_status bp_comm_attach(bp_comm *comm, bp_model *model, bp_optimizer *optimizer);

/* Fails on every rank when any rank's `ok` is 0: the consensus a program reaches before its
 * next collective call, so that a rank whose own work failed (a file it could not read) takes
 * the others down with a message instead of leaving them waiting. what names the work in the
 * message ("loading the data"). Returns BP_OK when every rank is ok. Collective. */
BP_API bp_status bp_comm_agree(bp_comm *comm, int ok, const char *what);

/* Fails on every rank unless every rank passed the same text (a description of what must
 * agree: "60000 x 784, 10 classes, checksum 1f3a..."); the message quotes rank 0's text and the
 * first differing rank's, and what names it ("the training data"). Collective. */
BP_API bp_status bp_comm_check_same(bp_comm *comm, const char *text, const char *what);

/* Sums count doubles over the ranks, in place, the same result on every rank (for metrics).
 * Collective. */
BP_API bp_status bp_comm_sum(bp_comm *comm, double *values, int count);

/* Seconds spent in gradient all-reduces and the bytes reduced, since the comm was created. */
BP_API void bp_comm_stats(const bp_comm *comm, double *allreduce_seconds, double *bytes);

/* Ends the whole job now (MPI_Abort) with exit status code: for a rank that cannot go on and
 * must not leave the others waiting. Does not return when MPI is running. */
BP_API void bp_comm_abort(bp_comm *comm, int code);

#ifdef __cplusplus
}
#endif

#endif
