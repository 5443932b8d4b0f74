/* The loss and the metric over a dataset: bp_evaluate (evaluate.h), the training loss op in
 * inference mode, summed in double. */
#include <math.h>

#include "cli.h"

int cli_metric_is_accuracy(bp_loss_kind kind) {
    return kind != BP_LOSS_MSE;
}

int cli_evaluate(int cmd, bp_model *m, const bp_dataset *ds, const bp_loss_config *loss,
                 cli_eval *res) {
    res->n = 0;
    res->loss = res->metric = NAN;
    if (bp_dataset_size(ds) == 0) return 0;
    bp_eval_result r;
    if (bp_evaluate(m, ds, loss, 0, &r, NULL) != BP_OK) return cli_lib_fail(cmd, "evaluation");
    res->n = r.rows;
    res->loss = r.loss;
    res->metric = cli_metric_is_accuracy(loss->kind) ? r.accuracy : r.loss;
    return 0;
}
