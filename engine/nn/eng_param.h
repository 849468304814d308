/* eng_param.h — one named parameter tensor's place in the model's single parameter allocation.
 *
 * Parameters have one canonical order and plain layout (the order torch's Module.parameters()
 * yields for the same modules), so the whole set is one float array: a checkpoint is one copy,
 * and gradients and optimiser state mirror it offset for offset. */
#ifndef ENG_PARAM_H
#define ENG_PARAM_H

#include <stddef.h>

typedef struct eng_param {
    char name[48];  /* e.g. "stage1.block0.conv1.weight" */
    int ndims;      /* 4: conv [out,in,k,k]; 2: linear [out,in]; 1: BN weight or bias [C] */
    int shape[4];
    size_t offset;  /* in floats, into params / grads / optimiser state */
    size_t count;   /* number of floats */
} eng_param;

#endif
