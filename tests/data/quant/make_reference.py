#!/usr/bin/python3
"""Writes the PyTorch reference values emb's storage and quantization tests compare against.

Run by hand (the tests only read the files it writes), with Debian's python3-torch:

    /usr/bin/python3 tests/data/quant/make_reference.py

It writes, next to itself:

  quantized.txt  float tables and what PyTorch's CPU ops give for them:
                 torch.ops.quantized.embedding_bag_{byte,4bit,2bit}_prepack (the packed bytes),
                 _unpack (the dequantized values) and _rowwise_offsets (Sum bags: plain,
                 per_sample_weights, include_last_offset, pruned rows through
                 compressed_indices_mapping); for dims PyTorch refuses for Int4 / Int2, the bytes
                 of the table with its last code byte filled by copies of column 0 (which moves
                 neither the minimum nor the maximum), so the test can mask the unused bits.
  storage.txt    float tables converted with .half() / .bfloat16(): the converted bits,
                 F.embedding on the converted table, and F.embedding_bag sum / mean / max on its
                 values in float.

Format: blocks starting with "case NAME"; then one line per field, "key type values...", where
type is str (a name), f32 (values as 8-digit hex bit patterns, exact), u16 (4-digit hex), u8 (one hex string,
two digits a byte), i64 (decimal) or int (one decimal). Torch 1.13 as packaged by Debian is built
without FBGEMM, so these are PyTorch's own reference (fallback) kernels.
"""

import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
RNG = np.random.default_rng(20261123)
Q = torch.ops.quantized
PREPACK = {8: Q.embedding_bag_byte_prepack, 4: Q.embedding_bag_4bit_prepack, 2: Q.embedding_bag_2bit_prepack}
UNPACK = {8: Q.embedding_bag_byte_unpack, 4: Q.embedding_bag_4bit_unpack, 2: Q.embedding_bag_2bit_unpack}
BAG = {8: Q.embedding_bag_byte_rowwise_offsets, 4: Q.embedding_bag_4bit_rowwise_offsets,
       2: Q.embedding_bag_2bit_rowwise_offsets}


def f32(values):
    a = np.ascontiguousarray(np.asarray(values, dtype=np.float32)).ravel()
    return "f32 " + " ".join("%08x" % v for v in a.view(np.uint32))


def u16(values):
    a = np.ascontiguousarray(np.asarray(values)).ravel()
    return "u16 " + " ".join("%04x" % int(v) for v in a)


def u8(values):
    return "u8 " + np.ascontiguousarray(np.asarray(values, dtype=np.uint8)).ravel().tobytes().hex()


def i64(values):
    return "i64 " + " ".join(str(int(v)) for v in np.asarray(values).ravel())


def integer(v):
    return "int %d" % v


class Writer:
    def __init__(self, path):
        self.path = path
        self.lines = []

    def case(self, name, **fields):
        self.lines.append("case " + name)
        for key, value in fields.items():
            self.lines.append(key + " " + value)

    def close(self):
        with open(self.path, "w") as out:
            out.write("# Written by make_reference.py with torch %s; do not edit.\n" % torch.__version__)
            out.write("\n".join(self.lines) + "\n")


# ---- float tables ------------------------------------------------------------------------------

def normal(rows, dim, scale=1.0):
    return (RNG.standard_normal((rows, dim)) * scale).astype(np.float32)


def special(dim):
    """Rows that probe each corner of the rounding, valid for every bit width."""
    rows = []
    rows.append(np.full(dim, 5.0))                                # constant: zero range
    rows.append(np.full(dim, -3.25))                              # constant, negative
    rows.append(np.zeros(dim))                                    # zero row
    rows.append(np.full(dim, -0.0))                               # negative zeros: bias -0
    rows.append(np.array([0.0, -0.0] * (dim // 2)))               # signed zeros, +0 first
    rows.append(np.array([-0.0, 0.0] * (dim // 2)))               # signed zeros, -0 first
    rows.append(1.0 + np.arange(dim) * 1e-7)                      # a range of a few float ulps
    rows.append(np.arange(dim) * 1e-30)                           # a range no float16 scale holds
    rows.append(np.arange(dim) * 1e-6)                            # float16 scale subnormal
    rows.append(-1.0 - np.abs(RNG.standard_normal(dim)) * 100)    # negative only
    rows.append(1e4 + RNG.random(dim) * 5e4)                      # large positive, bias 1e4
    rows.append(np.concatenate([[2049.5], 2050 + RNG.random(dim - 1) * 30]))  # float16 bias above min
    rows.append(np.linspace(65000.0, 65504.0, dim))               # bias near the float16 limit
    rows.append(np.linspace(-60000.0, 60000.0, dim))              # huge range, scale 8000
    ties = np.array([0.5, 1.5, 2.5, 3.5, 14.5, 13.5, 0.0, 15.0])  # Int4 codes exactly halfway
    rows.append(np.resize(ties, dim))
    ties8 = np.array([0.0, 255.0, 0.5, 1.5, 2.5, 253.5, 254.5, 127.5])
    rows.append(np.resize(ties8, dim))                            # Int8 codes exactly halfway
    return np.array(rows, dtype=np.float32)


def special_int8(dim):
    """Rows only Int8 holds: parameters far outside float16."""
    rows = [
        np.linspace(-1e30, 1e30, dim),
        np.linspace(1e20, 3e20, dim),
        -np.linspace(1e35, 2e35, dim),
        np.linspace(-1e-38, 1e-38, dim),  # float subnormals
        RNG.standard_normal(dim) * 1e5,
    ]
    return np.array(rows, dtype=np.float32)


def bag_inputs(rows, n, bags, seed_shift=0):
    ids = RNG.integers(0, rows, n)
    cuts = np.sort(RNG.integers(0, n + 1, bags - 1))
    offsets = np.concatenate([[0], cuts])
    offsets[min(2, bags - 1)] = offsets[min(1, bags - 1)]  # an empty bag
    offsets = np.maximum.accumulate(offsets)
    return ids.astype(np.int64), offsets.astype(np.int64)


def write_quantized(w):
    tables = [
        ("normal_d64", normal(16, 64)),
        ("normal_d8", normal(12, 8)),
        ("normal_d16", normal(10, 16, 3.0)),
        ("normal_d128", normal(8, 128)),
        ("normal_d12", normal(8, 12, 0.5)),
        ("normal_d20", normal(6, 20)),
        ("normal_d4", normal(6, 4)),
        ("special_d16", special(16)),
        ("special_d24", special(24)),
        ("special_int8_d16", special_int8(16)),
    ]
    for name, table in tables:
        rows, dim = table.shape
        t = torch.from_numpy(table)
        w.case("table/" + name, rows=integer(rows), dim=integer(dim), weight=f32(table))
        for bits in (8, 4, 2):
            if name.startswith("special_int8") and bits != 8:
                continue
            if bits != 8 and dim % (8 // bits) != 0:
                continue
            packed = PREPACK[bits](t)
            unpacked = UNPACK[bits](packed)
            tag = "%s/int%d" % (name, bits)
            w.case("packed/" + tag, table="str " + name, bits=integer(bits),
                   packed=u8(packed.numpy()), unpacked=f32(unpacked.numpy()))
            # Sum bags through PyTorch's rowwise op.
            ids, offsets = bag_inputs(rows, 40, 6)
            psw = RNG.standard_normal(len(ids)).astype(np.float32)
            variants = [
                ("plain", ids, offsets, None, None, False),
                ("psw", ids, offsets, psw, None, False),
                ("last", ids, np.concatenate([offsets, [len(ids)]]), None, None, True),
                ("last_psw", ids, np.concatenate([offsets, [len(ids)]]), psw, None, True),
            ]
            # Pruned: original ids over 2N, half of them mapped to a stored row, the rest -1.
            original = 2 * rows
            mapping = -np.ones(original, dtype=np.int32)
            kept = RNG.permutation(original)[:rows]
            mapping[kept] = RNG.permutation(rows)
            pruned_ids = RNG.integers(0, original, 40).astype(np.int64)
            variants.append(("pruned", pruned_ids, offsets, None, mapping, False))
            variants.append(("pruned_psw", pruned_ids, offsets, psw, mapping, False))
            if dim >= 64:  # wide rows: the plain, weighted and pruned cases only (file size)
                variants = [v for v in variants if v[0] in ("plain", "psw", "pruned")]
            for vname, vids, voffsets, vpsw, vmap, last in variants:
                out = BAG[bits](packed, torch.from_numpy(vids), torch.from_numpy(voffsets), False, 0,
                                vmap is not None, None if vpsw is None else torch.from_numpy(vpsw),
                                None if vmap is None else torch.from_numpy(vmap), last)
                fields = dict(packed="str " + tag, indices=i64(vids), offsets=i64(voffsets),
                              include_last_offset=integer(int(last)))
                if vpsw is not None:
                    fields["psw"] = f32(vpsw)
                if vmap is not None:
                    fields["mapping"] = i64(vmap)
                fields["output"] = f32(out.numpy())
                w.case("bag/%s/%s" % (tag, vname), **fields)

    # Dims PyTorch refuses for Int4 / Int2: the bytes of the table widened to the next multiple
    # of 8 / bits by copies of column 0.
    for dim in (1, 3, 7, 13, 127):
        table = normal(6, dim)
        table[1] = 2.0  # a constant row
        name = "odd_d%d" % dim
        w.case("table/" + name, rows=integer(6), dim=integer(dim), weight=f32(table))
        packed = PREPACK[8](torch.from_numpy(table))
        w.case("packed/%s/int8" % name, table="str " + name, bits=integer(8),
               packed=u8(packed.numpy()), unpacked=f32(UNPACK[8](packed).numpy()))
        for bits in (4, 2):
            per = 8 // bits
            wide = (dim + per - 1) // per * per
            padded = np.concatenate([table, np.repeat(table[:, :1], wide - dim, axis=1)], axis=1)
            packed = PREPACK[bits](torch.from_numpy(np.ascontiguousarray(padded)))
            w.case("padded/%s/int%d" % (name, bits), bits=integer(bits), padded_dim=integer(wide),
                   packed=u8(packed.numpy()))


def write_storage(w):
    table = normal(12, 16)
    # Values that probe float -> 16-bit rounding: ties, overflow, subnormals, signed zeros.
    table[0] = [1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 65504.0, 65520.0, 70000.0, -65520.0,
                2.0 ** -25, 3 * 2.0 ** -26, 2.0 ** -24 * 1.5, -0.0, 0.0, 1e-40, 1.0 + 2.0 ** -8,
                1.0 + 3 * 2.0 ** -8, 3.0e38, -1.0 - 2.0 ** -8]
    table[1] = np.linspace(-1e-5, 1e-5, 16)
    t = torch.from_numpy(table)
    ids = RNG.integers(0, 12, 30).astype(np.int64)
    offsets = np.array([0, 4, 4, 11, 20], dtype=np.int64)
    for name, dtype in (("half", torch.float16), ("bfloat16", torch.bfloat16)):
        converted = t.to(dtype)
        bits = converted.view(torch.int16).numpy().astype(np.uint16)
        looked_up = F.embedding(torch.from_numpy(ids), converted).float()
        values = converted.float()
        fields = dict(rows=integer(12), dim=integer(16), weight=f32(table), converted=u16(bits),
                      indices=i64(ids), lookup=f32(looked_up.numpy()), offsets=i64(offsets))
        for mode in ("sum", "mean", "max"):
            out = F.embedding_bag(torch.from_numpy(ids), values, torch.from_numpy(offsets), mode=mode)
            fields["bag_" + mode] = f32(out.numpy())
        w.case("storage/" + name, **fields)


def main():
    quantized = Writer(os.path.join(HERE, "quantized.txt"))
    write_quantized(quantized)
    quantized.close()
    storage = Writer(os.path.join(HERE, "storage.txt"))
    write_storage(storage)
    storage.close()


if __name__ == "__main__":
    main()
