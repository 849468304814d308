/* eng_lars.h — the LARS optimiser and learning-rate schedule of the Barlow Twins paper.
 *
 * Reproduces the reference implementation (facebookresearch/barlowtwins, main.py: LARS and
 * adjust_learning_rate). For each parameter p with gradient g:
 *   not 1-D:  dp = g + wd·p;  q = η‖p‖/‖dp‖ (1 if either norm is 0);  dp = q·dp
 *   1-D (BN weights and biases): dp = g  (no decay, no trust ratio)
 *   μ = momentum·μ + dp;  p −= lr·μ
 * lr = f(step)·batch/256·base, base 0.2 for weights and 0.0048 for 1-D parameters, where f rises
 * linearly from 0 over `warmup` steps, then follows a cosine to 0.001 at `total` steps or stays 1. */
#ifndef ENG_LARS_H
#define ENG_LARS_H

#include "eng_param.h"

typedef struct eng_lars_cfg {
    double momentum;     /* 0.9 */
    double eta;          /* trust coefficient, 0.001 */
    double weight_decay; /* 1.5e-6 */
    double lr_weights;   /* base learning rate of weights, 0.2 */
    double lr_biases;    /* base learning rate of 1-D parameters, 0.0048 */
    int batch;           /* images per step: lr scales by batch/256 */
    long warmup;         /* steps of linear warmup */
    long total;          /* steps of the cosine schedule (ignored when constant) */
    int cosine;          /* 1: cosine decay after warmup; 0: constant (open-ended training) */
} eng_lars_cfg;

/* The paper's defaults for a batch size; warmup 10 steps... callers set warmup/total. */
eng_lars_cfg eng_lars_defaults(int batch);

/* The schedule factor f(step)·batch/256 (multiply by lr_weights or lr_biases). */
double eng_lars_lr_scale(const eng_lars_cfg *cfg, long step);

/* One update of every parameter. mu mirrors params (zeroed before the first step). */
void eng_lars_step(const eng_lars_cfg *cfg, const eng_param *tab, int n_tab, float *params,
                   const float *grads, float *mu, long step);

#endif
