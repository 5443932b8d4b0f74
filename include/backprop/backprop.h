/* backprop: train multi-layer perceptrons by backpropagation on the CPU or an NVIDIA GPU. */
#ifndef BACKPROP_H
#define BACKPROP_H

#include "version.h"
#include "status.h"
#include "device.h"
#include "tensor.h"
#include "loss.h"
#include "model.h"
#include "optim.h"
#include "train.h"
#include "data.h"
#include "checkpoint.h"
#include "evaluate.h"
#include "bench.h"
#include "distributed.h"

#endif
