/* The float64 reference; see ref_ops.h. Written from the formulas, not from kernels/. */
#include "ref_ops.h"

#include <math.h>

#define REF_SQRT1_2        0.70710678118654752440 /* 1 / sqrt(2) */
#define REF_INV_SQRT_2PI   0.39894228040143267794 /* 1 / sqrt(2 pi) */
#define REF_SQRT_2_OVER_PI 0.79788456080286535588
#define REF_GELU_C         0.044715

void bpref_gemm(int trans_a, int trans_b, int m, int n, int k, double alpha, const double *a,
                int lda, const double *b, int ldb, double beta, double *c, int ldc) {
    for (int i = 0; i < m; ++i) {
        for (int j = 0; j < n; ++j) {
            double acc = 0.0;
            for (int p = 0; p < k; ++p) {
                double aip = trans_a ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
                double bpj = trans_b ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                acc += aip * bpj;
            }
            double *cij = &c[(size_t)i * ldc + j];
            *cij = beta == 0.0 ? alpha * acc : alpha * acc + beta * *cij;
        }
    }
}

static double ref_sigmoid(double x) {
    if (x >= 0.0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

double bpref_act(double x, bp_activation act, double slope) {
    switch (act) {
    case BP_ACT_IDENTITY:
        return x;
    case BP_ACT_RELU:
        return x > 0.0 ? x : 0.0;
    case BP_ACT_LEAKY_RELU:
        return x > 0.0 ? x : slope * x;
    case BP_ACT_SIGMOID:
        return ref_sigmoid(x);
    case BP_ACT_TANH:
        return tanh(x);
    case BP_ACT_GELU:
        return 0.5 * x * (1.0 + erf(x * REF_SQRT1_2));
    case BP_ACT_GELU_TANH:
        return 0.5 * x * (1.0 + tanh(REF_SQRT_2_OVER_PI * (x + REF_GELU_C * x * x * x)));
    case BP_ACT_SILU:
        return x * ref_sigmoid(x);
    default:
        return NAN;
    }
}

double bpref_act_derivative(double x, bp_activation act, double slope) {
    switch (act) {
    case BP_ACT_IDENTITY:
        return 1.0;
    case BP_ACT_RELU:
        return x > 0.0 ? 1.0 : 0.0;
    case BP_ACT_LEAKY_RELU:
        return x > 0.0 ? 1.0 : slope;
    case BP_ACT_SIGMOID: {
        double s = ref_sigmoid(x);
        return s * (1.0 - s);
    }
    case BP_ACT_TANH: {
        double t = tanh(x);
        return 1.0 - t * t;
    }
    case BP_ACT_GELU: {
        /* d/dx x Phi(x) = Phi(x) + x phi(x) */
        double cdf = 0.5 * (1.0 + erf(x * REF_SQRT1_2));
        double pdf = REF_INV_SQRT_2PI * exp(-0.5 * x * x);
        return cdf + x * pdf;
    }
    case BP_ACT_GELU_TANH: {
        /* u = c0 (x + c1 x^3); d/dx 0.5 x (1 + tanh u) = 0.5 (1 + tanh u) + 0.5 x sech^2(u) u' */
        double u = REF_SQRT_2_OVER_PI * (x + REF_GELU_C * x * x * x);
        double du = REF_SQRT_2_OVER_PI * (1.0 + 3.0 * REF_GELU_C * x * x);
        double t = tanh(u);
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du;
    }
    case BP_ACT_SILU: {
        /* d/dx x s(x) = s + x s (1 - s) */
        double s = ref_sigmoid(x);
        return s + x * s * (1.0 - s);
    }
    default:
        return NAN;
    }
}

void bpref_bias_act_forward(int rows, int cols, const double *bias, double *z, double *a,
                            bp_activation act, double slope) {
    for (int r = 0; r < rows; ++r) {
        for (int c = 0; c < cols; ++c) {
            size_t i = (size_t)r * cols + c;
            if (bias) z[i] += bias[c];
            a[i] = bpref_act(z[i], act, slope);
        }
    }
}

void bpref_act_backward(size_t n, const double *z, const double *da, double *dz, bp_activation act,
                        double slope) {
    for (size_t i = 0; i < n; ++i)
        dz[i] = da[i] * bpref_act_derivative(z[i], act, slope);
}

void bpref_col_sum(int rows, int cols, const double *x, double beta, double *out) {
    for (int c = 0; c < cols; ++c) {
        double s = 0.0;
        for (int r = 0; r < rows; ++r)
            s += x[(size_t)r * cols + c];
        out[c] = beta == 0.0 ? s : beta * out[c] + s;
    }
}

/* max_j x_j + log sum_j exp(x_j - max). */
static double ref_logsumexp(int cols, const double *x) {
    double mx = x[0];
    for (int j = 1; j < cols; ++j)
        if (x[j] > mx) mx = x[j];
    double s = 0.0;
    for (int j = 0; j < cols; ++j)
        s += exp(x[j] - mx);
    return mx + log(s);
}

void bpref_softmax(int rows, int cols, const double *x, double *y) {
    for (int r = 0; r < rows; ++r) {
        const double *xr = x + (size_t)r * cols;
        double *yr = y + (size_t)r * cols;
        double lse = ref_logsumexp(cols, xr);
        for (int j = 0; j < cols; ++j)
            yr[j] = exp(xr[j] - lse);
    }
}

void bpref_softmax_xent(int rows, int cols, const double *logits, const int32_t *labels,
                        double smoothing, double grad_scale, double *grad, double *row_loss) {
    for (int r = 0; r < rows; ++r) {
        const double *zr = logits + (size_t)r * cols;
        double lse = ref_logsumexp(cols, zr);
        double loss = 0.0;
        for (int j = 0; j < cols; ++j) {
            double q = (j == labels[r] ? 1.0 - smoothing : 0.0) + smoothing / cols;
            double log_p = zr[j] - lse;
            loss -= q * log_p;
            if (grad) grad[(size_t)r * cols + j] = grad_scale * (exp(log_p) - q);
        }
        row_loss[r] = loss;
    }
}

void bpref_class_match(int rows, int cols, const float *logits, const int32_t *labels,
                       double *match) {
    for (int r = 0; r < rows; ++r) {
        const float *z = logits + (size_t)r * (size_t)cols;
        double max = -INFINITY;
        int any = 0;
        for (int j = 0; j < cols; ++j)
            if (z[j] == z[j] && (!any || (double)z[j] > max)) max = z[j], any = 1;
        int first = -1;
        for (int j = 0; j < cols && first < 0 && any; ++j)
            if ((double)z[j] == max) first = j;
        match[r] = first == labels[r] ? 1.0 : 0.0;
    }
}

void bpref_mse(int rows, int cols, const double *pred, const double *target, double grad_scale,
               double *grad, double *row_loss) {
    for (int r = 0; r < rows; ++r) {
        double loss = 0.0;
        for (int j = 0; j < cols; ++j) {
            size_t i = (size_t)r * cols + j;
            double d = pred[i] - target[i];
            loss += d * d;
            if (grad) grad[i] = grad_scale * 2.0 * d;
        }
        row_loss[r] = loss;
    }
}

void bpref_bce_logits(int rows, int cols, const double *logits, const double *target,
                      double grad_scale, double *grad, double *row_loss) {
    for (int r = 0; r < rows; ++r) {
        double loss = 0.0;
        for (int j = 0; j < cols; ++j) {
            size_t i = (size_t)r * cols + j;
            double z = logits[i], t = target[i];
            /* -t log s(z) - (1-t) log(1 - s(z)) = -t log s(z) - (1-t) log s(-z), and
             * -log s(z) = log(1 + e^-z) = max(-z, 0) + log1p(e^-|z|). */
            double softplus_neg = fmax(-z, 0.0) + log1p(exp(-fabs(z))); /* -log s(z) */
            double softplus_pos = fmax(z, 0.0) + log1p(exp(-fabs(z)));  /* -log s(-z) */
            loss += t * softplus_neg + (1.0 - t) * softplus_pos;
            if (grad) grad[i] = grad_scale * (ref_sigmoid(z) - t);
        }
        row_loss[r] = loss;
    }
}

/* Neumaier's variant of Kahan summation. */
static void ref_kahan_add(double *sum, double *comp, double x) {
    double t = *sum + x;
    if (fabs(*sum) >= fabs(x))
        *comp += (*sum - t) + x;
    else
        *comp += (x - t) + *sum;
    *sum = t;
}

double bpref_sum(size_t n, const double *x) {
    double s = 0.0, c = 0.0;
    for (size_t i = 0; i < n; ++i)
        ref_kahan_add(&s, &c, x[i]);
    return s + c;
}

double bpref_sum_squares(size_t n, const double *x) {
    double s = 0.0, c = 0.0;
    for (size_t i = 0; i < n; ++i)
        ref_kahan_add(&s, &c, x[i] * x[i]);
    return s + c;
}

void bpref_optim_step(const bpref_optim *opt, int64_t t, size_t n, double *param,
                      const double *grad, double *m, double *v) {
    double bc1 = 1.0 - pow(opt->beta1, (double)t);
    double bc2 = 1.0 - pow(opt->beta2, (double)t);
    for (size_t i = 0; i < n; ++i) {
        double g = grad[i] * opt->grad_scale;
        if (opt->clip_value > 0.0) {
            if (g > opt->clip_value) g = opt->clip_value;
            if (g < -opt->clip_value) g = -opt->clip_value;
        }
        double p = param[i];
        if (opt->kind == BP_OPTIM_SGD) {
            g += opt->weight_decay * p;
            if (opt->momentum != 0.0) {
                m[i] = t == 1 ? g : opt->momentum * m[i] + (1.0 - opt->dampening) * g;
                g = opt->nesterov ? g + opt->momentum * m[i] : m[i];
            }
            param[i] = p - opt->lr * g;
        } else {
            if (opt->kind == BP_OPTIM_ADAMW)
                p *= 1.0 - opt->lr * opt->weight_decay;
            else
                g += opt->weight_decay * p;
            m[i] = opt->beta1 * m[i] + (1.0 - opt->beta1) * g;
            v[i] = opt->beta2 * v[i] + (1.0 - opt->beta2) * g * g;
            double m_hat = m[i] / bc1;
            double denom = sqrt(v[i]) / sqrt(bc2) + opt->eps;
            param[i] = p - opt->lr * m_hat / denom;
        }
    }
}
