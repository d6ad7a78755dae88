#!/usr/bin/env python3
"""An implementation of emb's seeded table init written apart from the C++ one (pure Python).

The values tests/test_embedding.cpp pins for the init come from here:

    python3 rng_reference.py            # prints the pinned tables
    python3 rng_reference.py 42 3 2     # any seed, rows, dim

The scheme: row r of a table drawn with seed s has its own xoshiro256** generator, seeded by
splitmix64 from the key mix64(s ^ mix64(r)) (mix64 is splitmix64's output function); uniforms
take the top 53 bits of a 64-bit output; normals come from Marsaglia's polar method, two per
accepted pair, the second kept for the next value and dropped at the end of a row.
"""
import math
import sys

M = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


def rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M


class Xoshiro256ss:
    def __init__(self, seed):
        self.s = []
        x = seed
        for _ in range(4):
            x = (x + GOLDEN) & M
            self.s.append(mix64(x))
        self.spare = None

    def next_u64(self):
        s = self.s
        result = (rotl((s[1] * 5) & M, 7) * 9) & M
        t = (s[1] << 17) & M
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result

    def uniform(self):
        return (self.next_u64() >> 11) * 2.0 ** -53

    def normal(self):
        if self.spare is not None:
            v, self.spare = self.spare, None
            return v
        while True:
            u = 2.0 * self.uniform() - 1.0
            v = 2.0 * self.uniform() - 1.0
            s = u * u + v * v
            if 0.0 < s < 1.0:
                break
        factor = math.sqrt(-2.0 * math.log(s) / s)
        self.spare = v * factor
        return u * factor


def table(seed, rows, dim):
    out = []
    for r in range(rows):
        rng = Xoshiro256ss(mix64(seed ^ mix64(r)))
        out.append([rng.normal() for _ in range(dim)])
    return out


def show(seed, rows, dim):
    print(f"seed {seed}, ({rows}, {dim}), row-major, repr of the double values:")
    for row in table(seed, rows, dim):
        print("  " + ", ".join(repr(v) for v in row))


if __name__ == "__main__":
    if len(sys.argv) == 4:
        show(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
    else:
        show(0, 2, 3)   # Embedding<float>(EmbeddingOptions(2, 3), 0), rounded to float in the test
        show(42, 3, 2)  # Embedding<double>(EmbeddingOptions(3, 2), 42)
