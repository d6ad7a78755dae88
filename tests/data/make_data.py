#!/usr/bin/env python3
"""Writes the small files tests/test_npy.cpp and tests/test_word2vec.cpp read.

The .npy files come from NumPy itself (np.save / np.lib.format.write_array), so the tests check
emb against the format's reference writer. Run from anywhere: python3 make_data.py
"""
import os
import struct

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))


def path(name):
    return os.path.join(here, name)


# One 3x4 table, distinct values so that a wrong order shows.
table = np.array([[0.1, -2.5, 3.0, 0.001],
                  [1.5, 0.25, -0.125, 7.0],
                  [-0.3, 2.0, 1e-5, -4.75]])

np.save(path("f4_c_v1.npy"), table.astype(np.float32))
np.save(path("f8_fortran_v1.npy"), np.asfortranarray(table))
np.save(path("f8_big_endian.npy"), table.astype(">f8"))
with open(path("f4_c_v2.npy"), "wb") as f:
    np.lib.format.write_array(f, table.astype(np.float32), version=(2, 0))
with open(path("f4_fortran_v3.npy"), "wb") as f:
    np.lib.format.write_array(f, np.asfortranarray(table.astype(np.float32)), version=(3, 0))

# binary16 corner cases: signed zero, largest finite, smallest normal, smallest and largest
# subnormal, infinities, NaN, and 1/3 rounded to half.
half = np.array([[0.0, -0.0, 1.0, -2.0],
                 [65504.0, 2.0 ** -14, 2.0 ** -24, 1023 * 2.0 ** -24],
                 [np.inf, -np.inf, np.nan, 1.0 / 3.0]], dtype=np.float16)
np.save(path("f2_c_v1.npy"), half)
with open(path("f2_fortran_v2.npy"), "wb") as f:
    np.lib.format.write_array(f, np.asfortranarray(half), version=(2, 0))

# Older NumPy versions aligned the data to 16 bytes, not 64: write such a header by hand.
header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }"
total = 10 + len(header) + 1
header += " " * ((16 - total % 16) % 16) + "\n"
assert (10 + len(header)) % 16 == 0 and (10 + len(header)) % 64 != 0
with open(path("f4_c_align16.npy"), "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
    f.write(table.astype("<f4").tobytes())

# word2vec flavours of one table with tokens the, 优, cat.
tokens = ["the", "\u4f18", "cat"]
t32 = table.astype(np.float32)

with open(path("w2v_c_text.txt"), "wb") as f:  # the C tool: "%lf " per value, trailing space
    f.write(b"3 4\n")
    for tok, row in zip(tokens, t32):
        f.write(tok.encode() + b" " + b"".join(b"%lf " % float(v) for v in row) + b"\n")

with open(path("w2v_gensim_text.txt"), "wb") as f:  # gensim: repr of each value, no trailing space
    f.write(b"3 4\n")
    for tok, row in zip(tokens, t32):
        f.write((tok + " " + " ".join(str(v) for v in row) + "\n").encode())

with open(path("w2v_c_binary.bin"), "wb") as f:  # the C tool: '\n' after every row
    f.write(b"3 4\n")
    for tok, row in zip(tokens, t32):
        f.write(tok.encode() + b" " + row.astype("<f4").tobytes() + b"\n")

with open(path("w2v_gensim_binary.bin"), "wb") as f:  # gensim: no '\n' between rows
    f.write(b"3 4\n")
    for tok, row in zip(tokens, t32):
        f.write(tok.encode() + b" " + row.astype("<f4").tobytes())

with open(path("fasttext.vec"), "wb") as f:  # fastText: 5 significant digits, trailing space
    f.write(b"3 4\n")
    for tok, row in zip(tokens, t32):
        f.write((tok + " " + "".join("%.5g " % float(v) for v in row) + "\n").encode())

# GloVe: no header, tokens with spaces, a token that is a number, CRLF line ends.
glove_tokens = ["new york", "1999", "a  b"]
with open(path("glove_crlf.txt"), "wb") as f:
    for tok, row in zip(glove_tokens, t32):
        f.write((tok + " " + " ".join(repr(float(v)) for v in row) + "\r\n").encode())
