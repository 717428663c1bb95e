"""Float layers -> integer graph nodes: the pieces every quantizer shares.

A `Lowering` is a GraphBuilder that also knows how to lower a Dense layer, an RMSNorm and a
sum of two int8 tensors, given the float parameters and the activation scales (tinylm/quant/qmath.py
turns scales into the fixed-point multipliers tinylm/graph/ops.py consumes)."""
from __future__ import annotations

import numpy as np

from tinylm import graph as G
from tinylm.graph import ops
from tinylm.quant import qmath


def pack_signs(plus, xp=np):
    """bool [..., K] (True = +1) -> uint32 [..., ceil(K/32)] in BinarizeInt's bit layout."""
    return ops.binarize_int(xp.where(plus, 1, -1).astype(xp.int8), xp.zeros(1, xp.int32), xp)


def pack_sign_table(plus, xp=np):
    """A Gather table of sign bits, bool [rows, K] -> its packed rows at their real width: uint16
    words when K <= 16 (the binary token table, r bits a token: ops.gather zero-extends them to
    the uint32 words of pack_signs), else pack_signs' uint32. quant/repack.py's rule for tables."""
    words = pack_signs(plus, xp)
    return words.astype(xp.uint16) if plus.shape[-1] <= 16 else words


class Lowering(G.GraphBuilder):
    def requantize(self, acc: str, real_scale, name: str) -> str:
        """int32 -> int8 with multiplier/shift per tensor or per channel for `real_scale`."""
        m, s = qmath.quantize_multipliers(np.broadcast_to(real_scale, np.shape(real_scale)))
        return self.op("Requantize", [acc, self.const(name + ".m", m), self.const(name + ".s", s)], name)

    def dense(self, x: str, s_x: float, layer: dict, s_out: float, name: str) -> str:
        """MatMulInteger (int8 weights per output channel) + int32 bias Add + Requantize."""
        w, sw = qmath.quantize_weight(layer["kernel"])
        acc = self.op("MatMulInteger", [x, self.const(name + ".w", w)], name + ".mm")
        bias = self.const(name + ".b", qmath.quantize_bias(layer["bias"], s_x * sw))
        acc = self.op("Add", [acc, bias], name + ".bias")
        return self.requantize(acc, s_x * sw / s_out, name)

    def binary_dense(self, x: str, s_x: float, layer: dict, s_out: float, name: str) -> str:
        """BinarizeInt (beta in units of s_x) + BinaryMatMulInt + int32 bias Add + Requantize of a
        BinaryDense layer (quant/embbert.binary_parts): alpha sign(x + beta) @ a_w sign(W - mu) + b
        = alpha a_w (k - 2 popcount) + b, so alpha a_w is the scale of the popcount dot."""
        k = layer["bits"].shape[0]
        beta = np.round(layer["beta"] / s_x).astype(np.int32)
        bits = self.op("BinarizeInt", [x, self.const(name + ".beta", beta)], name + ".sign")
        acc = self.op("BinaryMatMulInt", [bits, self.const(name + ".wb", pack_signs(layer["bits"].T))],
                      name + ".mm", k=int(k))
        scale = layer["alpha"] * np.asarray(layer["a_w"], np.float64)
        acc = self.op("Add", [acc, self.const(name + ".b", qmath.quantize_bias(layer["bias"], scale))], name + ".bias")
        return self.requantize(acc, scale / s_out, name)

    def rmsnorm(self, x: str, gain: np.ndarray, s_out: float, name: str) -> str:
        """RMSNormInt: the input scale cancels; the int8 gain's scale and 2**-14 (ops.rmsnorm_int)
        go into the output multiplier."""
        g, sg = qmath.quantize_weight(np.reshape(gain, (-1, 1)), per_channel=False)
        m, s = qmath.quantize_multiplier(float(sg[0]) / 2 ** 14 / s_out)
        return self.op("RMSNormInt", [x, self.const(name + ".g", g.reshape(-1))], name, multiplier=m, shift=s)

    def add(self, x: str, s_x: float, y: str, s_y: float, s_out: float, name: str) -> str:
        """AddInt8 of two int8 tensors of scales s_x and s_y (a negative s_y subtracts)."""
        ma, mb, sh = qmath.add_multipliers(s_x, s_y, s_out)
        return self.op("AddInt8", [x, y], name, ma=ma, mb=mb, shift=sh)
