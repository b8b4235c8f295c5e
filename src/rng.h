/* The one pseudorandom generator of the core: splitmix64 (Steele, Lea and
 * Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014).
 * 64-bit state, integer-only, so a seed gives the same sequence on every
 * machine and compiler; a stream is cheap to derive from (seed, epoch,
 * step, layer), which is how training stays bit-identical when resumed. */
#ifndef BD_RNG_H
#define BD_RNG_H

#include <stdint.h>

static inline uint64_t bd_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 53 random bits. */
static inline double bd_rng_uniform(uint64_t *state)
{
    return (double)(bd_splitmix64(state) >> 11) * 0x1.0p-53;
}

/* Uniform in [0, bound): draws below 2^64 mod bound are rejected, so the
 * modulo has no bias. */
static inline uint64_t bd_rng_below(uint64_t *state, uint64_t bound)
{
    uint64_t reject = (0 - bound) % bound;
    for (;;) {
        uint64_t r = bd_splitmix64(state);
        if (r >= reject)
            return r % bound;
    }
}

/* A stream's starting state from a seed and up to three indices. */
static inline uint64_t bd_rng_stream(uint64_t seed, uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t s = seed;
    s = bd_splitmix64(&s) ^ a;
    s = bd_splitmix64(&s) ^ b;
    s = bd_splitmix64(&s) ^ c;
    return bd_splitmix64(&s);
}

#endif
