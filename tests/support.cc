#include "support.h"

#include <limits>
#include <utility>

#include "kernels/bp_math.h"

namespace bpt {

std::vector<std::string> all_backends() {
    return {"cpu", "cuda"};
}

bp_device *open_or_reason(const std::string &name, std::string *why) {
    bp_status st = BP_OK;
    bp_device *d = bp_device_open(name.c_str(), &st);
    if (!d) *why = "backend '" + name + "' is not available here: " + bp_last_error();
    return d;
}

double rel_err(const float *out, const double *ref, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; ++i) {
        if (!std::isfinite(out[i])) return std::numeric_limits<double>::infinity();
        double d = (double)out[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}

double rel_err(const std::vector<float> &out, const std::vector<double> &ref) {
    if (out.size() != ref.size()) return std::numeric_limits<double>::infinity();
    return rel_err(out.data(), ref.data(), out.size());
}

double rel_err(const std::vector<float> &out, const std::vector<float> &ref) {
    return rel_err(out, to_double(ref));
}

std::vector<float> uniform(size_t n, float lo, float hi, uint32_t seed) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(n);
    for (auto &x : v)
        x = dist(gen);
    return v;
}

std::vector<double> to_double(const std::vector<float> &v) {
    return std::vector<double>(v.begin(), v.end());
}

std::vector<int64_t> documented_shuffle(int64_t n, uint64_t seed, uint64_t stream) {
    std::vector<int64_t> perm(n);
    for (int64_t i = 0; i < n; ++i)
        perm[i] = i;
    for (int64_t k = 0; k + 1 < n; ++k) {
        uint64_t r = (uint64_t)bp_random_u32(seed, stream, 2 * k) |
                     (uint64_t)bp_random_u32(seed, stream, 2 * k + 1) << 32;
        int64_t i = n - 1 - k, j = (int64_t)(r % (uint64_t)(i + 1));
        std::swap(perm[i], perm[j]);
    }
    return perm;
}

std::vector<float> train_small(bp_device *dev, const SmallRun &r, std::string *err) {
    int widths[] = {r.in, r.h1, r.h2, r.classes};
    float drop[] = {0.2f, 0.1f, 0.0f};
    bp_mlp_config cfg = bp_mlp_config_default(3, widths);
    cfg.dropout = drop;
    cfg.seed = r.seed;
    cfg.max_batch = r.rows;
    bp_model *m = bp_model_create(dev, &cfg, nullptr);
    bp_optim_config oc = bp_optim_config_default(BP_OPTIM_ADAMW);
    oc.clip_norm = r.clip_norm;
    bp_optimizer *o = m ? bp_optimizer_create(m, &oc, nullptr) : nullptr;
    bp_tensor *x = bp_tensor_create(dev, BP_F32, r.rows, r.in, nullptr);
    bp_tensor *y = bp_tensor_create(dev, BP_I32, r.rows, 1, nullptr);
    std::vector<float> params;
    bool ok = o && x && y;
    if (ok) {
        auto xs = uniform((size_t)r.rows * r.in, -1.0f, 1.0f, r.data_seed);
        std::vector<int32_t> ys(r.rows);
        for (int i = 0; i < r.rows; ++i)
            ys[i] = (i * r.label_stride + r.label_offset) % r.classes;
        ok = bp_tensor_upload(x, xs.data(), xs.size()) == BP_OK &&
             bp_tensor_upload(y, ys.data(), ys.size()) == BP_OK;
        bp_loss_config ce = {BP_LOSS_CROSS_ENTROPY, r.label_smoothing};
        for (int s = 0; s < r.steps && ok; ++s)
            ok = bp_train_step(m, o, &ce, x, y, nullptr) == BP_OK;
    }
    if (ok) {
        params.resize(bp_model_n_params(m));
        if (bp_model_get_params(m, params.data(), params.size()) != BP_OK) params.clear();
    }
    if (params.empty()) *err = bp_last_error();
    bp_tensor_free(x);
    bp_tensor_free(y);
    bp_optimizer_free(o);
    bp_model_free(m);
    return params;
}

} // namespace bpt
