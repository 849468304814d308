/* test_loss.c — the Barlow Twins loss on its own: value against a direct double-precision loop,
 * hand-written backward against central finite differences. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "eng_loss.h"
#include "test_util.h"

/* The definition, written as plainly as possible, in double. */
static double loss_reference(const float *za, const float *zb, int n, int d, double lambda) {
    double on = 0, off = 0;
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double c = 0;
            for (int k = 0; k < n; k++) c += (double)za[k * d + i] * zb[k * d + j];
            c /= n;
            if (i == j)
                on += (1 - c) * (1 - c);
            else
                off += c * c;
        }
    return on + lambda * off;
}

typedef struct fixture {
    eng_ctx ctx;
    eng_bt_loss loss;
    int n, d;
    double lambda;
} fixture;

static void setup(fixture *f, int n, int d, double lambda) {
    eng_err err = {0};
    f->n = n;
    f->d = d;
    f->lambda = lambda;
    cr_assert(eng_ctx_init(&f->ctx, &err) == 0, "%s", err.msg);
    cr_assert(eng_bt_loss_build(&f->loss, &f->ctx, n, d, lambda, &err) == 0, "%s", err.msg);
    cr_assert(eng_ctx_finish_build(&f->ctx, &err) == 0, "%s", err.msg);
}

static void teardown(fixture *f) {
    eng_bt_loss_free(&f->loss);
    eng_ctx_free(&f->ctx);
}

static double run(fixture *f, float *za, float *zb, float *dza, float *dzb) {
    eng_err err = {0};
    double l;
    cr_assert(eng_bt_loss_run(&f->loss, &f->ctx, za, zb, dza, dzb, &l, &err) == 0, "%s", err.msg);
    dnnl_stream_wait(f->ctx.stream);
    return l;
}

Test(loss, value_equals_the_definition_including_the_diagonal_term) {
    fixture f;
    setup(&f, 7, 5, 0.0051);
    float za[35], zb[35];
    tu_randn(za, 35, 1, 1.0);
    tu_randn(zb, 35, 2, 1.0);
    double got = run(&f, za, zb, NULL, NULL);
    double want = loss_reference(za, zb, 7, 5, 0.0051);
    cr_expect(fabs(got - want) < 1e-5 * fabs(want), "loss %.9g, reference %.9g", got, want);
    teardown(&f);
}

Test(loss, perfectly_correlated_decorrelated_features_give_zero_loss) {
    /* z with orthogonal columns of norm sqrt(N) gives c = I exactly. N = 4, D = 2. */
    fixture f;
    setup(&f, 4, 2, 0.5);
    float z[8] = {1, 1, 1, -1, -1, 1, -1, -1};
    double got = run(&f, z, z, NULL, NULL);
    cr_expect(fabs(got) < 1e-6, "loss %.9g, want 0", got);
    cr_expect(fabs(f.loss.diag_mean - 1) < 1e-6 && f.loss.offdiag_abs_mean < 1e-6);
    teardown(&f);
}

Test(loss, backward_matches_finite_differences) {
    const int n = 6, d = 5;
    fixture f;
    setup(&f, n, d, 0.3); /* a large λ so the off-diagonal term carries weight */
    float za[30], zb[30], dza[30], dzb[30];
    tu_randn(za, 30, 3, 1.0);
    tu_randn(zb, 30, 4, 1.0);
    run(&f, za, zb, dza, dzb);
    double worst = 0;
    for (int which = 0; which < 2; which++) {
        float *z = which ? zb : za, *g = which ? dzb : dza;
        for (int i = 0; i < n * d; i++) {
            const double h = 1e-3;
            float keep = z[i];
            z[i] = (float)(keep + h);
            double step = (double)z[i] - keep; /* the step float can represent */
            double lp = loss_reference(za, zb, n, d, 0.3);
            z[i] = (float)(keep - h);
            step += keep - (double)z[i];
            double lm = loss_reference(za, zb, n, d, 0.3);
            z[i] = keep;
            double fd = (lp - lm) / step;
            double e = fabs(fd - g[i]) / (fabs(fd) + 1e-3);
            if (e > worst) worst = e;
            cr_expect(e < 1e-3, "d/dz%c[%d]: analytic %.7g, finite difference %.7g",
                      which ? 'B' : 'A', i, g[i], fd);
        }
    }
    cr_log_info("worst relative error %.3g", worst);
    teardown(&f);
}

Test(loss, refuses_a_batch_of_one) {
    eng_ctx ctx;
    eng_err err = {0};
    eng_bt_loss l;
    cr_assert(eng_ctx_init(&ctx, &err) == 0);
    cr_expect(eng_bt_loss_build(&l, &ctx, 1, 4, 0.1, &err) != 0);
    eng_ctx_free(&ctx);
}
