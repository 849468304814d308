/* eng_lars.c — LARS update and warmup/cosine schedule. */
#include "eng_lars.h"

#include <math.h>

static const double PI = 3.14159265358979323846;

eng_lars_cfg eng_lars_defaults(int batch) {
    eng_lars_cfg c = {.momentum = 0.9,
                      .eta = 0.001,
                      .weight_decay = 1.5e-6,
                      .lr_weights = 0.2,
                      .lr_biases = 0.0048,
                      .batch = batch,
                      .warmup = 1000,
                      .total = 100000,
                      .cosine = 0};
    return c;
}

double eng_lars_lr_scale(const eng_lars_cfg *cfg, long step) {
    double base = cfg->batch / 256.0;
    if (step < cfg->warmup) return base * (double)step / (double)cfg->warmup;
    if (!cfg->cosine) return base;
    long span = cfg->total - cfg->warmup;
    double t = span > 0 ? (double)(step - cfg->warmup) / (double)span : 1.0;
    if (t > 1) t = 1;
    double q = 0.5 * (1.0 + cos(PI * t));
    return base * q + base * 0.001 * (1.0 - q);
}

void eng_lars_step(const eng_lars_cfg *cfg, const eng_param *tab, int n_tab, float *params,
                   const float *grads, float *mu, long step) {
    double scale = eng_lars_lr_scale(cfg, step);
#pragma omp parallel for schedule(dynamic, 1)
    for (int t = 0; t < n_tab; t++) {
        const eng_param *pt = &tab[t];
        float *p = params + pt->offset, *m = mu + pt->offset;
        const float *g = grads + pt->offset;
        size_t n = pt->count;
        if (pt->ndims == 1) {
            float lr = (float)(scale * cfg->lr_biases), mom = (float)cfg->momentum;
            for (size_t i = 0; i < n; i++) {
                m[i] = mom * m[i] + g[i];
                p[i] -= lr * m[i];
            }
            continue;
        }
        double wd = cfg->weight_decay, pn = 0, un = 0;
        for (size_t i = 0; i < n; i++) {
            double dp = (double)g[i] + wd * p[i];
            pn += (double)p[i] * p[i];
            un += dp * dp;
        }
        pn = sqrt(pn);
        un = sqrt(un);
        double q = (pn > 0 && un > 0) ? cfg->eta * pn / un : 1.0;
        float lr = (float)(scale * cfg->lr_weights), mom = (float)cfg->momentum;
        for (size_t i = 0; i < n; i++) {
            float dp = (float)(((double)g[i] + wd * p[i]) * q);
            m[i] = mom * m[i] + dp;
            p[i] -= lr * m[i];
        }
    }
}
