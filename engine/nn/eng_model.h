/* eng_model.h — the Barlow Twins network: ResNet-style encoder, MLP projector, loss.
 *
 * Legend: N = images per batch; training runs both views as one batch of R = 2N rows (view A rows
 * first), inference runs R = N rows of one view. C = channels, S = input size, D = projector
 * output, E = representation dim (last stage width).
 *
 *   input [R, C_in, S, S] plain ─ stem conv3x3 ─ BN+ReLU ─ blocks… ─ global avg pool ─ rep [R, E]
 *   rep ─ (Linear ─ BN1d+ReLU)… ─ Linear ─ BN1d (no affine) ─ z [R, D] ─ loss(z_A, z_B)
 *
 * Convolutions, poolings and linears see all R rows at once (they do not mix rows); every batch
 * norm runs per view, so each view is normalised with its own statistics exactly as two separate
 * forward passes would. Lifecycle: eng_model_build → eng_model_init_params (or fill params) →
 * [fill eng_model_input → eng_model_forward_backward / eng_model_forward]… → eng_model_free.
 * All memory is allocated by build: the step itself never allocates. */
#ifndef ENG_MODEL_H
#define ENG_MODEL_H

#include <stdatomic.h>
#include <stdint.h>

#include "eng_bnorm.h"
#include "eng_config.h"
#include "eng_conv.h"
#include "eng_lars.h"
#include "eng_linear.h"
#include "eng_loss.h"
#include "eng_param.h"
#include "eng_pool.h"
#include "eng_resadd.h"

/* Roles of the model's shared buffers, each sized for the largest tensor that borrows it.
 * Training: a block's gradients live only while its backward runs, so every block uses the same
 * few buffers, except the gradient passed between blocks, which alternates between two.
 * Inference keeps no activation for a backward: every batch norm runs in place (a1 = c1, y = c2,
 * bs = cs) and a block's tensors rotate through three buffers (its input x in one, c1 and then
 * the shortcut's cs in the next, c2 = y, the next block's input, in the third), so a batch of
 * `small` needs 0.39 MB per image instead of 1.47 (docs/BENCHMARKS.md, "Memory"). */
enum {
    ENG_DIFF_DY0, ENG_DIFF_DY1, /* block outputs' gradients, alternating block by block */
    ENG_DIFF_G,                 /* ReLU backward of the residual join */
    ENG_DIFF_B,                 /* dc2, then dc1 (and the stem's dc0) */
    ENG_DIFF_C,                 /* da1, then the shortcut's dcs */
    ENG_DIFF_D,                 /* the shortcut's input gradient dxs */
    ENG_ACT_0, ENG_ACT_1, ENG_ACT_2, /* inference activations, rotating block by block */
    ENG_SHARED_ROLES
};

/* One basic residual block and the activations it owns. */
typedef struct eng_block {
    int stride, cin, cout, has_proj; /* has_proj: 1×1 conv + BN shortcut */
    eng_conv conv1, conv2, convs;
    eng_bnorm bn1, bn2, bns;         /* bn1 has the ReLU fused */
    eng_resadd add;                  /* y = ReLU(bn2 + shortcut) */
    eng_accum acc;                   /* dx += shortcut gradient */
    eng_tensor *x, *dx;              /* borrowed: block input and its gradient */
    eng_tensor c1, a1, c2, y;        /* [R, cout, H', W']; y holds bn2's output, then the result;
                                      * owned in training, shared views in inference */
    eng_tensor cs, bs;               /* shortcut conv and BN outputs (has_proj only) */
    /* Gradients: borrowed views into the model's shared backward buffers (see ENG_DIFF_*). */
    eng_tensor dy;                   /* gradient of y (written by the next layer's backward) */
    eng_tensor g, dc2, da1, dc1;     /* backward intermediates */
    eng_tensor dcs, dxs;             /* shortcut backward intermediates (has_proj only) */
} eng_block;

typedef struct eng_model {
    eng_config cfg;
    eng_ctx ctx;
    int batch;              /* N images (a shard: this rank's images) */
    int global_batch;       /* images of a step over all ranks (= batch unless sharded) */
    const eng_reduce *red;  /* borrowed: the job's sums when sharded, else NULL */
    int rows;               /* R = 2N (training) or N (inference) */
    int training;

    int n_params;           /* entries of the canonical parameter table */
    eng_param *tab;         /* owned [n_params] */
    size_t n_floats;        /* total parameter floats */
    float *params;          /* owned [n_floats], canonical order and layout */
    float *grads;           /* owned [n_floats] (training) */
    float *momentum;        /* owned [n_floats] LARS state (training) */
    int n_bn;               /* batch norms */
    eng_bnorm **bn_list;    /* owned [n_bn]: the batch norms in canonical order */
    size_t n_stats;         /* floats of running statistics: per BN, mean[C] then var[C]; an
                             * inference model (no projector) holds a prefix of the training
                             * model's, since the projector's BNs come last */
    float *stats;           /* owned [n_stats] */

    eng_tensor input;       /* owned [R, C_in, S, S] plain */
    eng_conv stem_conv;
    eng_bnorm stem_bn;
    eng_tensor c0, a0, dc0, da0;
    int n_blocks;
    eng_block *blocks;      /* owned [n_blocks] */
    eng_pool pool;
    eng_tensor h[ENG_MAX_PROJ], dh[ENG_MAX_PROJ]; /* h[0] = rep [R, E]; h[i] input of linear i */
    eng_tensor l[ENG_MAX_PROJ], dl[ENG_MAX_PROJ]; /* linear outputs [R, proj[i]] */
    eng_linear lin[ENG_MAX_PROJ];
    eng_bnorm pbn[ENG_MAX_PROJ];                  /* hidden BN1d+ReLU; [n_proj-1] is affine-free */
    eng_tensor z, dz;                             /* [R, D] */
    eng_bt_loss loss;

    size_t shared_bytes[ENG_SHARED_ROLES]; /* size of each shared buffer (ENG_DIFF_*, ENG_ACT_*) */
    float *shared_buf[ENG_SHARED_ROLES];   /* owned shared buffers */
    int n_shared_views;                  /* tensors borrowing them */
    struct {
        eng_tensor *t;
        int role;
    } *shared_views;                     /* owned [n_shared_views] */

    double last_loss;       /* loss of the last forward_backward */
    const atomic_int *stop; /* borrowed, may be NULL: once it reads non-zero, forward_backward
                             * gives up between layers (returns -1, eng_model_stopped says so);
                             * grads and running statistics are then partly updated */
} eng_model;

/* The canonical parameter table of a config, without building anything (for validating files).
 * *tab is malloc'd; caller frees. */
int eng_model_param_table(const eng_config *cfg, eng_param **tab, int *n, size_t *n_floats,
                          eng_err *err);

/* training: 1 builds forward+backward for N images × 2 views; 0 builds the encoder for N images. */
int eng_model_build(eng_model *m, const eng_config *cfg, int batch, int training, eng_err *err);
/* A training model for this rank's `batch` images of a data-parallel step of `global_batch`
 * images: its batch norms and loss see the whole step through red (the job's sums), and
 * forward_backward ends with every rank holding the gradient of the whole step. red NULL is the
 * single-process model (then global_batch must equal batch). */
int eng_model_build_shard(eng_model *m, const eng_config *cfg, int batch, int global_batch,
                          const eng_reduce *red, int training, eng_err *err);

/* torchvision initialisation from a seed: Kaiming-normal (fan-out) convolutions, BN weight 1 and
 * bias 0 except the second BN of every block (weight 0), Linear U(±1/√fan_in); running mean 0,
 * variance 1; optimiser state 0. */
void eng_model_init_params(eng_model *m, uint64_t seed);

/* The plain input buffer: R rows of [C_in, S, S] (training: view A images, then view B). */
float *eng_model_input(eng_model *m);
/* The representation rows [R, E] after a forward (training: view A rows first). */
const float *eng_model_rep(const eng_model *m);

/* 1 when m->stop is set: the last failure of forward_backward was that interruption. */
int eng_model_stopped(const eng_model *m);

/* An inference model whose parameters will not change again (eng_infer, after loading its
 * checkpoint): each convolution's weights are put in its forward layout once, and forwards
 * skip that reorder from then on. */
int eng_model_freeze(eng_model *m, eng_err *err);

/* Training: forward both views, loss, backward; fills grads and last_loss, updates running stats. */
int eng_model_forward_backward(eng_model *m, eng_err *err);
/* forward_backward then one LARS update at schedule position `step`. */
int eng_model_train_step(eng_model *m, const eng_lars_cfg *opt, long step, eng_err *err);
/* Inference: encoder forward with running statistics; fills the representation. */
int eng_model_forward(eng_model *m, eng_err *err);

/* Bytes held by the model's buffers (parameters, state, activations, scratchpad). */
size_t eng_model_bytes(const eng_model *m);

void eng_model_free(eng_model *m);

#endif
