/* eng_rng.h — a small seeded random generator (xoshiro256**, seeded by splitmix64).
 *
 * Its whole state is four words, so a checkpoint can store it and a resumed run draws the same
 * numbers. Used for weight initialisation (and later, augmentation). */
#ifndef ENG_RNG_H
#define ENG_RNG_H

#include <stdint.h>

typedef struct eng_rng {
    uint64_t s[4]; /* xoshiro256** state; never all zero */
} eng_rng;

void eng_rng_seed(eng_rng *r, uint64_t seed);
uint64_t eng_rng_next(eng_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double eng_rng_uniform(eng_rng *r);
/* Standard normal (Box-Muller on two uniforms). */
double eng_rng_normal(eng_rng *r);

#endif
