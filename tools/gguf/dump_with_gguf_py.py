"""Reads a GGUF file with llama.cpp's own Python reader (the `gguf` package, gguf-py) and prints, as JSON,
every metadata key with its type and every tensor dequantized by gguf-py: name, type, shape and the float64
sum and sum of squares of its values. tools/gguf/compare-with-gguf-py.ts compares that with tuna's reading.
Usage: python dump_with_gguf_py.py FILE.gguf > dump.json"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

reader = GGUFReader(sys.argv[1])
out = {"fields": {}, "tensors": {}}
for name, field in reader.fields.items():
    if name.startswith("GGUF."):
        continue
    out["fields"][name] = [t.name for t in field.types]
for t in reader.tensors:
    values = dequantize(t.data, t.tensor_type).astype(np.float64)
    out["tensors"][t.name] = {
        "type": t.tensor_type.name,
        "shape": [int(d) for d in t.shape],
        "sum": float(values.sum()),
        "sumsq": float((values * values).sum()),
    }
json.dump(out, sys.stdout)
