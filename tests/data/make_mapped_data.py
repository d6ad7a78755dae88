#!/usr/bin/env python3
"""Writes the files tests/test_mapped.cpp and tests/test_safetensors.cpp read beside those of
make_data.py, and the values they must give.

map_f8_c_v1.npy is NumPy's own (np.save of the 3x4 table as C-order float64).

No safetensors library is used: each file is laid out byte by byte as the format's reference
implementation writes it (8-byte little-endian header length; compact JSON header padded with
spaces to a multiple of 8 bytes; tensors sorted by decreasing dtype alignment, then by name,
stored one after the other from offset 0). The stored values are PyTorch's: the float16 and
bfloat16 roundings come from torch.float16 / torch.bfloat16, and their float32 widenings (exact)
are saved next to them with NumPy, so the tests compare emb's reading bit for bit with PyTorch's.

Run with the Python that has NumPy and PyTorch:  /usr/bin/python3 tests/data/make_mapped_data.py
"""
import json
import os
import struct

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))


def path(name):
    return os.path.join(here, name)


# The reference's dtypes in its order of increasing alignment; its writer sorts by the reverse.
DTYPE_ORDER = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0",
               "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32",
               "C64", "F64", "I64", "U64"]
TORCH_DTYPE = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
               torch.bfloat16: "BF16", torch.int64: "I64"}


def tensor_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:  # NumPy has no bfloat16: take the 16-bit patterns
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def header_json(entries, metadata):
    """Compact JSON, __metadata__ first (keys sorted: the reference's order is unspecified)."""
    obj = {}
    if metadata:
        obj["__metadata__"] = {k: metadata[k] for k in sorted(metadata)}
    for name, dtype, shape, begin, end in entries:
        obj[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def write(filename, tensors, metadata=None, header_mod8=0, sort=True):
    """tensors: {name: torch tensor}. header_mod8: pad the header to this length modulo 8
    (0 as the reference writer does; another value makes a file whose data is misaligned)."""
    items = list(tensors.items())
    if sort:
        items.sort(key=lambda kv: (-DTYPE_ORDER.index(TORCH_DTYPE[kv[1].dtype]), kv[0]))
    entries, blobs, offset = [], [], 0
    for name, t in items:
        data = tensor_bytes(t)
        entries.append((name, TORCH_DTYPE[t.dtype], t.shape, offset, offset + len(data)))
        blobs.append(data)
        offset += len(data)
    header = header_json(entries, metadata)
    header += b" " * ((header_mod8 - len(header)) % 8)
    with open(path(filename), "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for b in blobs:
            f.write(b)


# The 3x4 table of tests/data/make_data.py (distinct values, so that a wrong order shows).
table = torch.tensor([[0.1, -2.5, 3.0, 0.001],
                      [1.5, 0.25, -0.125, 7.0],
                      [-0.3, 2.0, 1e-5, -4.75]], dtype=torch.float64)

# binary16 corner cases: signed zero, largest finite, smallest normal, smallest and largest
# subnormal, infinities, NaN, and 1/3 rounded to half.
f16 = torch.tensor([[0.0, -0.0, 1.0, -2.0],
                    [65504.0, 2.0 ** -14, 2.0 ** -24, 1023 * 2.0 ** -24],
                    [float("inf"), float("-inf"), float("nan"), 1.0 / 3.0]],
                   dtype=torch.float32).to(torch.float16)

# bfloat16 cases: signed zero, values that round (1/3, 0.1), the two ties 1 + 2^-8 (to even:
# 1.0) and 1 + 3 * 2^-8 (to even: 1 + 2^-6), the largest finite, infinities, NaN, a subnormal.
bf16 = torch.tensor([[0.0, -0.0, 1.0 / 3.0, 0.1],
                     [1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 3.3895313892515355e38, -1.5],
                     [float("inf"), float("-inf"), float("nan"), 2.0 ** -130]],
                    dtype=torch.float32).to(torch.bfloat16)

np.save(path("map_f8_c_v1.npy"), table.numpy())

write("st_reference.safetensors", {
    "table.f64": table,
    "table.f32": table.to(torch.float32),
    "table.f16": f16,
    "table.bf16": bf16,
    "ids": torch.tensor([0, 2, 1], dtype=torch.int64),                       # I64: not loadable
    "scalar": torch.tensor(2.5, dtype=torch.float32),                        # shape []
    "cube": torch.arange(12, dtype=torch.float32).reshape(2, 2, 3) / 4,      # shape [2, 2, 3]
    "empty": torch.zeros(0, 4, dtype=torch.float32),                         # no bytes
}, metadata={"format": "pt", "source": "tests/data/make_mapped_data.py"})

np.save(path("st_f16_as_f32.npy"), f16.to(torch.float32).numpy())
np.save(path("st_bf16_as_f32.npy"), bf16.to(torch.float32).numpy())

# A header of 8k + 4 bytes, as writers that do not pad make: the data starts 4 bytes off an
# 8-byte boundary, so the F64 tensor (first) cannot be mapped as double, while the F32 one after
# it is aligned for float.
write("st_unaligned.safetensors", {
    "w64": table,
    "w32": table.to(torch.float32),
}, header_mod8=4)

# What emb::io::save_safetensors<float> must write for two tables and metadata with characters
# JSON escapes (the reference writer's layout: sorted by name, __metadata__ first).
written_a = torch.tensor([[1.0, -2.0]], dtype=torch.float32)
written_b = torch.arange(6, dtype=torch.float32).reshape(2, 3) - 2.5
write("st_written_f32.safetensors", {"b.weight": written_b, "a.bias": written_a},
      metadata={"format": "pt", "note": "caf\u00e9 \"quoted\"\n\ttab \u4f18"})
