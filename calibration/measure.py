"""Measure a Llama-3-shaped decoder's step times and KV capacity on one GPU (random weights; any CUDA GPU).

Timing does not depend on weight values, so the weights are random. Shapes (``--model``):

* ``llama3-8b``: 32 layers, hidden 4096, 32 query / 8 KV heads of 128, SwiGLU MLP 14336, vocab 128256;
* ``llama3-70b``: 80 layers, hidden 8192, 64 query / 8 KV heads of 128, SwiGLU MLP 28672, vocab 128256;
* ``tiny``: 2 small layers, to test this script on a CPU (``--device cpu``).

Weights (``--weights``): ``bf16``, or ``fp8``: every layer's matrices in float8 e4m3 with one scale per output
channel and activations quantized per token on the fly (``torch._scaled_mm``, row-wise scales), the scheme of
the public FP8 Llama checkpoints; embeddings, LM head and the KV cache stay bf16.

Each layer runs as vLLM's compiled model does (``torch.compile`` piecewise, ``dynamic=True``): the dense part
before attention (RMSNorm, QKV, rotary) and after it (output projection, residual, RMSNorm, SwiGLU MLP) are
compiled (norms, rotary, activation and quantization fuse into few kernels); attention runs between them
eagerly: this step's K/V are written into the cache, prefill attention is causal ``scaled_dot_product_attention``,
decode attention passes the query heads that share a KV head as rows against that head's keys, so each K/V
byte is read once, as a paged decode kernel does. Each whole step is captured in a CUDA graph and replayed
(median of the replays, CUDA events).

``--layers N`` builds only N of the model's layers (they are identical) and also times every step with no
layer (embedding and LM head alone); the table's ``ms`` is then scaled to the whole model:
``head + (layers / N) x (N-layer step - head)``, with both measured figures kept in the table.

Tables (CSV ``kind,batch,context_len,prefill_tokens,ms[,ms_layers,ms_head]``):

* ``decode``: one decode step for ``batch`` sequences of ``context_len`` tokens each, up to the KV capacity;
* ``prefill``: one prompt of ``prefill_tokens`` tokens, logits of its last position;
* ``mixed``: a prefill chunk and a decoding batch in one step (chunked prefill).

KV capacity (``--memory``, whole models only) is measured as vLLM sizes its cache: the weights' bytes, the
peak of a forward pass of ``max_num_batched_tokens`` prompt tokens, and memory outside PyTorch's allocator
(CUDA context, libraries) are taken from ``gpu_memory_utilization`` x the card's memory; the rest, in 16-token
blocks, is the cache.

One command runs the whole calibration on a lent GPU (each part in its own process, all within the deadline):

    python3 calibration/measure.py all --out-dir OUT --deadline-s 540 [--parts 8b,70b-fp8]

Parts: ``8b`` (the whole 8B, with its KV capacity), ``70b-fp8`` (the whole 70B in FP8, with its KV capacity),
``70b-bf16`` (20 of its 80 layers in bf16: the 70B in bf16 does not fit one 141 GB GPU with a cache),
``70b-fp8-l20`` (20 FP8 layers, scaled like the bf16 part: checks the layer scaling against the whole model),
``ceilings`` (copy bandwidth and matrix rates). One part alone:

    python3 calibration/measure.py run --model llama3-8b --out h200_llama3_8b_raw.csv \
        --memory h200_llama3_8b_memory.json
    python3 calibration/measure.py run --model tiny --device cpu --weights fp8 --out /tmp/t.csv   # no GPU
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import subprocess
import sys
import time

import torch
import torch._dynamo
import torch.nn.functional as F

try:  # the few-rows FP8 kernel (GPU only); the CPU test path needs none
    import triton
    import triton.language as tl
except ImportError:
    triton = None

MODELS = {
    "llama3-8b": dict(layers=32, hidden=4096, heads=32, kv_heads=8, head_dim=128, mlp=14336, vocab=128256),
    "llama3-70b": dict(layers=80, hidden=8192, heads=64, kv_heads=8, head_dim=128, mlp=28672, vocab=128256),
    "tiny": dict(layers=2, hidden=256, heads=8, kv_heads=2, head_dim=32, mlp=512, vocab=1000),
}
FP8_MAX = 448.0
BLOCK = 16
MAX_BATCHED_TOKENS = 8192
MAX_SEQS = 256


class Spec:
    def __init__(self, name: str):
        self.name = name
        for k, v in MODELS[name].items():
            setattr(self, k, v)
        self.group = self.heads // self.kv_heads
        self.qkv_out = (self.heads + 2 * self.kv_heads) * self.head_dim

    def kv_bytes_per_token(self, layers: int | None = None) -> int:
        return 2 * (self.layers if layers is None else layers) * self.kv_heads * self.head_dim * 2


def rms_norm(x, w):
    return F.rms_norm(x, (x.shape[-1],), w, eps=1e-5)


def rope(x, cos, sin):
    # x [T, H, D]; cos, sin [T, 1, D/2]; rotate-half form (Llama)
    x1, x2 = x.chunk(2, -1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), -1)


def quant_rows(x):
    """Per-token (row) dynamic FP8 quantization: (x_fp8, scale[M, 1] float32)."""
    s = x.abs().amax(-1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX
    return (x.float() / s).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), s


# FP8 GEMMs of a few rows are memory bound, and cuBLAS's FP8 kernels for them read the weights at about a
# quarter of the bandwidth (measured on an H200: one 70B layer's four GEMMs at 1 row take 0.84 ms in FP8
# against 0.48 ms in bf16, whose kernels reach 86 %). Serving engines use kernels made for few rows (vLLM's
# CUTLASS configurations by row count, Marlin). Up to FP8_SMALL_MAX_ROWS rows, the FP8 matrices here go
# through a small Triton kernel that streams them once (split over K so the whole GPU reads): each weight
# tile is converted to bf16 in registers and multiplied with the bf16 activations (W8A16), the per-channel
# scale applied at the end. ``pick_fp8_gemm`` picks its tiles per matrix shape and the row limit from timings
# of both forms on the model's shapes. ``--fp8-gemm cublas`` uses cuBLAS at every size.
FP8_SMALL_MAX_ROWS = 0
SMALL_GEMM_CONFIG: dict[tuple[int, int], tuple[int, int, int]] = {}  # (N, K) -> (block N, block K, split K)

if triton is not None:

    @triton.jit
    def _w8a16_kernel(
        x_ptr, w_ptr, s_ptr, out_ptr, M, N, K, k_per, sxm, swn, som,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ATOMIC: tl.constexpr,
    ):  # fmt: skip
        pid_n, pid_k, pid_m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        k0 = pid_k * k_per
        for i in range(0, k_per, BLOCK_K):
            k = k0 + i
            a = tl.load(x_ptr + rm[:, None] * sxm + (k + rk)[None, :], mask=rm[:, None] < M, other=0.0)
            b = tl.load(w_ptr + rn[:, None] * swn + (k + rk)[None, :], mask=rn[:, None] < N, other=0.0)
            acc += tl.dot(a, tl.trans(b.to(a.dtype)))
        acc = acc * tl.load(s_ptr + rn, mask=rn < N, other=0.0)[None, :]
        ptrs = out_ptr + rm[:, None] * som + rn[None, :]
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        if ATOMIC:
            tl.atomic_add(ptrs, acc, mask=mask)
        else:
            tl.store(ptrs, acc, mask=mask)


def _small_gemm(x, w, ws, cfg) -> torch.Tensor:
    m, k = x.shape
    n = w.shape[0]
    bn, bk, split = cfg
    bm = 16 if m <= 16 else 32 if m <= 32 else 64
    x = x.contiguous()
    out = (torch.zeros if split > 1 else torch.empty)(m, n, device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(n, bn), split, triton.cdiv(m, bm))
    _w8a16_kernel[grid](x, w, ws, out, m, n, k, k // split, x.stride(0), w.stride(0), out.stride(0),
                        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, ATOMIC=split > 1, num_warps=4, num_stages=4)  # fmt: skip
    return out.to(torch.bfloat16)


@torch.library.custom_op("burstpilot_calib::fp8_small_mm", mutates_args=())
def fp8_small_mm(x: torch.Tensor, w: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    """x [M, K] bf16 @ w[N, K]^T (fp8, scales ws [1, N]) through the few-rows kernel (opaque to the compiler)."""
    return _small_gemm(x, w, ws, SMALL_GEMM_CONFIG[tuple(w.shape)])


@fp8_small_mm.register_fake
def _(x, w, ws):
    return x.new_empty(x.shape[0], w.shape[0])


def linear_fp8(x, w, ws):
    """x [M, K] bf16 @ w[N, K]^T (fp8, per-output-channel scales ws [1, N])."""
    if x.device.type != "cuda":  # CPU test path (no FP8 matrix unit): the same arithmetic, dequantized
        xq, s = quant_rows(x)
        return ((xq.float() * s) @ (w.float() * ws.t()).t()).to(torch.bfloat16)
    if x.shape[0] <= FP8_SMALL_MAX_ROWS:
        return fp8_small_mm(x, w, ws)
    return linear_fp8_cublas(x, w, ws)


def linear_fp8_cublas(x, w, ws):
    xq, s = quant_rows(x)
    return torch._scaled_mm(xq, w.t(), scale_a=s, scale_b=ws, out_dtype=torch.bfloat16)


def pick_fp8_gemm(spec: Spec, device) -> list[dict]:
    """Pick the few-rows kernel's tiles per shape, then time it against cuBLAS by row count."""
    global FP8_SMALL_MAX_ROWS
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    shapes = [(spec.qkv_out, spec.hidden), (spec.hidden, spec.heads * spec.head_dim)]
    shapes += [(2 * spec.mlp, spec.hidden), (spec.hidden, spec.mlp)]
    mats = []
    for n, k in shapes:
        full = torch.randn(n, k, device=device, dtype=torch.bfloat16)
        sc = (full.abs().amax(-1, keepdim=True).float() / FP8_MAX).clamp(min=1e-12)
        mats.append(((full.float() / sc).to(torch.float8_e4m3fn), sc.t().contiguous()))
    ok = True
    for (n, k), (wq, ws) in zip(shapes, mats, strict=True):
        x1 = torch.randn(1, k, device=device, dtype=torch.bfloat16)
        best = None
        for bn in (64, 128):
            for bk in (128, 256):
                split = 1
                while split < 16 and triton.cdiv(n, bn) * split < 2 * sms and k % (bk * split * 2) == 0:
                    split *= 2
                cfg = (bn, bk, split)
                try:
                    _small_gemm(x1, wq, ws, cfg)
                    ms = timed(lambda cfg=cfg, x1=x1, wq=wq, ws=ws: _small_gemm(x1, wq, ws, cfg), 20, device)
                except Exception as exc:  # a tile the compiler refuses: try the next
                    print(
                        f"# fp8 small-rows kernel {cfg} on {n}x{k}: {type(exc).__name__}: {exc}", flush=True
                    )
                    continue
                if best is None or ms < best[0]:
                    best = (ms, cfg)
        if best is None:
            ok = False
            break
        SMALL_GEMM_CONFIG[(n, k)] = best[1]
        x = torch.randn(5, k, device=device, dtype=torch.bfloat16)
        ref = x.float() @ (wq.float() * ws.t()).t()
        err = float((_small_gemm(x, wq, ws, best[1]).float() - ref).norm() / ref.norm())
        gbps = n * k / best[0] / 1e9
        print(f"# fp8 small-rows kernel {n}x{k}: tiles {best[1]}, 1 row {best[0]:.4f} ms ({gbps:.2f} TB/s), "
              f"relative error {err:.1e}", flush=True)  # fmt: skip
        if not err < 2e-2:
            ok = False
    rows = []
    for m in (1, 8, 16, 32, 64, 128, 192, 256):
        xs = [torch.randn(m, k, device=device, dtype=torch.bfloat16) for _, k in shapes]
        row = {"rows": m}
        pairs = list(zip(xs, mats, strict=True))
        row["cublas_fp8_ms"] = round(sum(timed(lambda x=x, w=w: linear_fp8_cublas(x, *w), 20, device)
                                         for x, w in pairs), 4)  # fmt: skip
        if ok:
            row["small_kernel_ms"] = round(sum(timed(lambda x=x, w=w: fp8_small_mm(x, *w), 20, device)
                                               for x, w in pairs), 4)  # fmt: skip
        rows.append(row)
        print("# fp8 gemm (one layer's 4 GEMMs)", json.dumps(row), flush=True)
    FP8_SMALL_MAX_ROWS = 0
    for row in rows:  # the small kernel from one row up while it is faster
        if row.get("small_kernel_ms", float("inf")) < row["cublas_fp8_ms"]:
            FP8_SMALL_MAX_ROWS = row["rows"]
        else:
            break
    print(f"# fp8 gemm: few-rows kernel up to {FP8_SMALL_MAX_ROWS} rows, cuBLAS above", flush=True)
    mats = xs = None
    torch.cuda.empty_cache()
    return rows


def pre_bf16(x, n1, wqkv, cos, sin, heads: int, kv_heads: int, head_dim: int):
    h = rms_norm(x, n1)
    qkv = h @ wqkv.t()
    q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], -1)
    q = rope(q.reshape(-1, heads, head_dim), cos, sin)
    k = rope(k.reshape(-1, kv_heads, head_dim), cos, sin)
    return q, k, v.reshape(-1, kv_heads, head_dim)


def post_bf16(a, x, wo, n2, wgu, wd):
    x = x + a @ wo.t()
    g, u = (rms_norm(x, n2) @ wgu.t()).chunk(2, -1)
    return x + (F.silu(g) * u) @ wd.t()


def pre_fp8(x, n1, wqkv, sqkv, cos, sin, heads: int, kv_heads: int, head_dim: int):
    h = rms_norm(x, n1)
    qkv = linear_fp8(h, wqkv, sqkv)
    q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], -1)
    q = rope(q.reshape(-1, heads, head_dim), cos, sin)
    k = rope(k.reshape(-1, kv_heads, head_dim), cos, sin)
    return q, k, v.reshape(-1, kv_heads, head_dim)


def post_fp8(a, x, wo, so, n2, wgu, sgu, wd, sd):
    x = x + linear_fp8(a, wo, so)
    g, u = linear_fp8(rms_norm(x, n2), wgu, sgu).chunk(2, -1)
    return x + linear_fp8(F.silu(g) * u, wd, sd)


def head_fn(x, nf, wlm):
    return (rms_norm(x, nf) @ wlm.t()).float().argmax(-1)


class Decoder:
    def __init__(self, spec: Spec, n_layers: int, weights: str, device, compiled: bool):
        self.s, self.n_layers, self.weights, self.device = spec, n_layers, weights, device
        s, bf = spec, torch.bfloat16

        def w(*shape):
            return torch.randn(*shape, device=device, dtype=bf) * 0.02

        def fp8(*shape):
            full = w(*shape)
            scale = (full.abs().amax(-1, keepdim=True).float() / FP8_MAX).clamp(min=1e-12)
            return (full.float() / scale).to(torch.float8_e4m3fn), scale.t().contiguous()  # scale [1, N]

        mat = fp8 if weights == "fp8" else lambda *shape: (w(*shape),)
        self.embed = w(s.vocab, s.hidden)
        self.lm_head = w(s.vocab, s.hidden)
        self.norm_f = torch.ones(s.hidden, device=device, dtype=bf)
        self.layers = []
        for _ in range(n_layers):
            n1 = torch.ones(s.hidden, device=device, dtype=bf)
            n2 = torch.ones(s.hidden, device=device, dtype=bf)
            pre = (n1, *mat(s.qkv_out, s.hidden))
            post = (
                *mat(s.hidden, s.heads * s.head_dim),
                n2,
                *mat(2 * s.mlp, s.hidden),
                *mat(s.hidden, s.mlp),
            )
            self.layers.append((pre, post))
        self.inv_freq = 1.0 / (
            500000.0 ** (torch.arange(0, s.head_dim, 2, device=device).float() / s.head_dim)
        )
        fns = (pre_fp8, post_fp8, head_fn) if weights == "fp8" else (pre_bf16, post_bf16, head_fn)
        self._fns = {False: fns}
        if compiled:
            self._fns[True] = tuple(torch.compile(f, dynamic=True) for f in fns)
        self.set_compiled(compiled)
        self.kv = None
        self.pkv = None

    def set_compiled(self, on: bool) -> None:
        self.pre, self.post, self.head = self._fns[on]

    def alloc_prompt_kv(self) -> None:
        """Where a step's prompt K/V are written (one layer at a time), as a paged cache write would."""
        if self.pkv is None:
            s = self.s
            shape = (2, MAX_BATCHED_TOKENS, s.kv_heads, s.head_dim)
            self.pkv = torch.empty(*shape, device=self.device, dtype=torch.bfloat16)

    def alloc_cache(self, max_kv_tokens: int) -> None:
        s = self.s
        self.alloc_prompt_kv()
        self.kv = None
        n = max(1, max_kv_tokens) * s.kv_heads * s.head_dim
        self.kv = torch.randn(max(1, self.n_layers), 2, n, device=self.device, dtype=torch.bfloat16)

    def cache(self, layer: int, batch: int, length: int):
        s = self.s
        n = batch * s.kv_heads * length * s.head_dim
        k = self.kv[layer, 0, :n].view(batch, s.kv_heads, length, s.head_dim)
        v = self.kv[layer, 1, :n].view(batch, s.kv_heads, length, s.head_dim)
        return k, v

    def forward(
        self, tokens, pos, n_prefill: int, batch: int, ctx: int, layers: int | None = None, hidden=False
    ):
        """Tokens: a prefill chunk's ``n_prefill`` tokens, then one token per decoding sequence (``batch``).

        Decoding sequences hold ``ctx`` tokens each, the last being this step's (its K/V are written here).
        Returns the greedy token of the prefill's last position and of every decoding sequence.
        """
        s = self.s
        dims = dict(heads=s.heads, kv_heads=s.kv_heads, head_dim=s.head_dim)
        x = self.embed[tokens]
        f = pos.float()[:, None] * self.inv_freq[None, :]
        cos, sin = f.cos().to(x.dtype)[:, None, :], f.sin().to(x.dtype)[:, None, :]
        for li in range(self.n_layers if layers is None else layers):
            pre_w, post_w = self.layers[li]
            q, k, v = self.pre(x, *pre_w, cos, sin, **dims)
            outs = []
            if n_prefill:
                self.pkv[0, :n_prefill] = k[:n_prefill]
                self.pkv[1, :n_prefill] = v[:n_prefill]
                qp = q[:n_prefill].transpose(0, 1)[None]  # [1, H, N, D]
                kp = k[:n_prefill].transpose(0, 1)[None].repeat_interleave(s.group, dim=1)
                vp = v[:n_prefill].transpose(0, 1)[None].repeat_interleave(s.group, dim=1)
                o = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)[0].transpose(0, 1)
                outs.append(o.reshape(n_prefill, s.heads * s.head_dim))
            if batch:
                kc, vc = self.cache(li, batch, ctx)
                kc[:, :, ctx - 1] = k[n_prefill:]
                vc[:, :, ctx - 1] = v[n_prefill:]
                qd = q[n_prefill:].reshape(batch, s.kv_heads, s.group, s.head_dim)
                od = F.scaled_dot_product_attention(qd, kc, vc)  # [B, KVH, G, D]
                outs.append(od.reshape(batch, s.heads * s.head_dim))
            a = torch.cat(outs, 0) if len(outs) > 1 else outs[0]
            x = self.post(a, x, *post_w)
        rows = []
        if n_prefill:
            rows.append(x[n_prefill - 1 : n_prefill])
        if batch:
            rows.append(x[n_prefill:])
        last = torch.cat(rows, 0) if len(rows) > 1 else rows[0]
        return last if hidden else self.head(last, self.norm_f, self.lm_head)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, reps: int, device) -> float:
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return times[len(times) // 2]


def step_inputs(m: Decoder, n_prefill: int, batch: int, ctx: int):
    tokens = torch.randint(0, m.s.vocab, (n_prefill + batch,), device=m.device)
    pos = torch.cat(
        [torch.arange(n_prefill, device=m.device), torch.full((batch,), ctx - 1, device=m.device)]
    ).long()
    return tokens, pos


def measure(m: Decoder, n_prefill: int, batch: int, ctx: int, reps: int, layers: int | None = None) -> float:
    """Median time (ms) of one step; on a GPU the step is captured in a CUDA graph and replayed."""
    tokens, pos = step_inputs(m, n_prefill, batch, ctx)

    def run():
        m.forward(tokens, pos, n_prefill, batch, ctx, layers=layers)

    with torch.inference_mode():
        for _ in range(2):
            run()
        if m.device.type != "cuda":
            return timed(run, reps, m.device)
        torch.cuda.synchronize()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            run()
        torch.cuda.current_stream().wait_stream(stream)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            run()
        for _ in range(3):
            g.replay()
        ms = timed(g.replay, reps, m.device)
        del g
        return ms


def check_compiled(m: Decoder) -> float:
    """Relative difference of one compiled layer's output against eager execution (one mixed step).

    One layer: through many layers of random weights, rounding differences grow until the comparison says
    nothing.
    """
    n_p, b, ctx = 48, 3, 40
    tokens, pos = step_inputs(m, n_p, b, ctx)
    with torch.inference_mode():
        got = m.forward(tokens, pos, n_p, b, ctx, layers=1, hidden=True).float()
        m.set_compiled(False)
        ref = m.forward(tokens, pos, n_p, b, ctx, layers=1, hidden=True).float()
        m.set_compiled(True)
    if not torch.isfinite(got).all():
        return float("inf")
    return float((got - ref).norm() / ref.norm())


def memory_profile(m: Decoder, spec: Spec, utilization: float) -> dict:
    """Size the KV cache as vLLM does: weights, a profile forward pass, memory outside PyTorch's allocator."""
    dev = m.device
    sync(dev)
    weights = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    m.alloc_prompt_kv()
    tokens, pos = step_inputs(m, MAX_BATCHED_TOKENS, 0, 0)
    with torch.inference_mode():
        m.forward(tokens, pos, MAX_BATCHED_TOKENS, 0, 0)
    sync(dev)
    peak = torch.cuda.max_memory_allocated() - weights
    free, total = torch.cuda.mem_get_info()
    non_torch = (total - free) - torch.cuda.memory_reserved()
    per_token = spec.kv_bytes_per_token()
    kv_bytes = total * utilization - weights - peak - non_torch
    blocks = max(0, int(kv_bytes // (per_token * BLOCK)))
    return {
        "gpu": torch.cuda.get_device_name(0),
        "total_bytes": int(total),
        "weights_bytes": int(weights),
        "activation_peak_bytes": int(peak),
        "non_torch_bytes": int(non_torch),
        "gpu_memory_utilization": utilization,
        "profile_tokens": MAX_BATCHED_TOKENS,
        "kv_bytes_per_token": per_token,
        "block_size": BLOCK,
        "kv_cache_bytes": int(blocks * per_token * BLOCK),
        "kv_capacity_tokens": blocks * BLOCK,
    }


def grids(spec: Spec, cap_tokens: int, tiny: bool):
    """Decode, prefill and mixed points; decode up to ``cap_tokens`` KV tokens (fill points at the top)."""
    if tiny:
        batches, ctxs = [1, 4, 16], [64, 256]
        prefills, mixed = [16, 64, 256], [(64, 4, 256)]
    else:
        batches = [1, 2, 4, 8, 16, 32, 64, 128, 192, 256]
        ctxs = [128, 512, 1024, 2048, 3072, 4096, 8192, 16384, 32768]
        prefills = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
        mixed = [
            (128, 8, 1024),
            (256, 32, 1024),
            (256, 128, 1024),
            (512, 64, 1024),
            (512, 128, 2048),
            (512, 256, 512),
            (1024, 16, 512),
            (1024, 64, 2048),
            (1024, 128, 1024),
            (2048, 16, 4096),
            (2048, 128, 512),
            (2048, 256, 256),
            (4096, 32, 2048),
            (7936, 256, 128),
        ]
    decode = [(b, c) for c in ctxs for b in batches if b * c <= cap_tokens]
    for b in batches[-3:]:  # the largest batches at the whole cache
        c = (cap_tokens // b) // 128 * 128
        if c > 0 and (b, c) not in decode and c <= 32768:
            decode.append((b, c))
    mixed = [(n, b, c) for n, b, c in mixed if b * c <= cap_tokens]
    points = [("prefill", n, 0, 0) for n in prefills] + [("mixed", n, b, c) for n, b, c in mixed]
    random.Random(0).shuffle(decode)  # a deadline cuts a random subset, not the long contexts
    return points + [("decode", 0, b, c) for b, c in decode]


def run_part(args) -> int:
    device = torch.device(args.device)
    spec = Spec(args.model)
    n_layers = args.layers or spec.layers
    scaled = n_layers != spec.layers
    torch.manual_seed(0)
    t0 = time.time()
    until = args.until or (t0 + 1e9)
    info = {"torch": torch.__version__, "python": platform.python_version(), "model": spec.name}
    info |= {"weights": args.weights, "kernels": "torch.compile" if args.compile else "eager"}
    if scaled:
        info["layers_measured"] = f"{n_layers}/{spec.layers}"
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        torch.backends.cuda.matmul.allow_tf32 = True
    torch._dynamo.config.cache_size_limit = 64
    if args.weights == "fp8" and device.type == "cuda":
        if args.fp8_gemm == "auto" and triton is not None:
            pick_fp8_gemm(spec, device)
        info["fp8_gemm"] = f"triton-w8a16<={FP8_SMALL_MAX_ROWS}rows,cublas-above"
    m = Decoder(spec, n_layers, args.weights, device, compiled=args.compile)
    print("# " + " ".join(f"{k}={v}" for k, v in info.items()), f"weights built in {time.time() - t0:.1f}s",
          flush=True)  # fmt: skip
    if args.memory:
        if scaled or device.type != "cuda":
            raise SystemExit("--memory needs the whole model on a GPU")
        mem = memory_profile(m, spec, args.gpu_memory_utilization)
        mem["measured_on"] = info
        with open(args.memory, "w") as fh:
            json.dump(mem, fh, indent=1)
        print("# memory", json.dumps(mem), flush=True)
        cap = mem["kv_capacity_tokens"]
    else:
        cap = args.max_kv_tokens
    cap = min(cap, args.max_kv_tokens) if args.max_kv_tokens else cap
    m.alloc_cache(cap)
    if args.compile:
        print(f"# compiled vs eager step: relative difference {check_compiled(m):.2e}", flush=True)
    points = grids(spec, cap, args.model == "tiny")
    header = " ".join(f"{k}={v}" for k, v in info.items())
    if scaled:
        header += f" (ms = head + {spec.layers}/{n_layers} x (ms_layers - ms_head))"
    done = skipped = failures = 0
    with open(args.out, "w", newline="") as fh:
        fh.write("# " + header + "\n")
        w = csv.writer(fh)
        w.writerow(["kind", "batch", "context_len", "prefill_tokens", "ms"] + (["ms_layers", "ms_head"] if scaled
                   else []))  # fmt: skip
        for kind, n, b, ctx in points:
            if time.time() > until:
                skipped += 1
                continue
            reps = args.reps if kind == "decode" else max(5, args.reps // 3)
            try:
                ms = measure(m, n, b, ctx, reps)
                head = measure(m, n, b, ctx, reps, layers=0) if scaled else 0.0
            except (RuntimeError, torch.OutOfMemoryError) as exc:  # keep what was measured; go on
                failures += 1
                print(
                    f"{kind} prefill={n} batch={b} ctx={ctx}: FAILED {type(exc).__name__}: {exc}", flush=True
                )
                if failures >= 3 and done == 0:
                    raise
                continue
            row = [kind, b, ctx, n]
            if scaled:
                full = head + spec.layers / n_layers * (ms - head)
                row += [f"{full:.4f}", f"{ms:.4f}", f"{head:.4f}"]
                ms = full
            else:
                row.append(f"{ms:.4f}")
            w.writerow(row)
            fh.flush()
            done += 1
            print(f"{kind:7s} prefill={n:5d} batch={b:4d} ctx={ctx:6d} {ms:9.3f} ms  [{time.time() - t0:5.0f}s]",
                  flush=True)  # fmt: skip
    print(f"# {spec.name} {args.weights}: {done} points, {failures} failed, {skipped} skipped past the deadline, "
          f"{time.time() - t0:.0f}s", flush=True)  # fmt: skip
    return 0


def ceilings(args) -> int:
    """Copy bandwidth and dense matrix rates (bf16, fp8 row-wise) on random data: the roofline's two numbers."""
    dev = torch.device("cuda")
    out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    a = torch.randn(1 << 29, device=dev, dtype=torch.bfloat16)  # 1 GiB
    b = torch.empty_like(a)
    ms = timed(lambda: b.copy_(a), 20, dev)
    out["copy_TBps"] = round(2 * a.numel() * 2 / ms / 1e9, 3)
    a = b = None  # free the 2 GiB
    n = 8192
    x, y = (
        torch.randn(n, n, device=dev, dtype=torch.bfloat16),
        torch.randn(n, n, device=dev, dtype=torch.bfloat16),
    )
    for _ in range(3):
        x @ y
    ms = timed(lambda: x @ y, 10, dev)
    out["bf16_matmul_TFLOPs"] = round(2 * n**3 / ms / 1e9, 1)
    xq, sx = quant_rows(x)
    yq, sy = quant_rows(y)
    for _ in range(3):
        linear_fp8(x, yq, sy.t().contiguous())
    ms = timed(lambda: torch._scaled_mm(xq, yq.t(), scale_a=sx, scale_b=sy.t().contiguous(),
               out_dtype=torch.bfloat16), 10, dev)  # fmt: skip
    out["fp8_rowwise_matmul_TFLOPs"] = round(2 * n**3 / ms / 1e9, 1)
    ref = x.float() @ y.float().t()
    got = linear_fp8(x, yq, sy.t().contiguous()).float()
    out["fp8_matmul_rel_error"] = float((got - ref).norm() / ref.norm())
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print("# ceilings", json.dumps(out), flush=True)
    return 0


PARTS = {
    # name: (file stem, run arguments, share of the remaining time)
    "ceilings": ("ceilings", None, 0.05),
    "8b": ("llama3_8b", ["--model", "llama3-8b"], 0.55),
    "70b-fp8": ("llama3_70b_fp8", ["--model", "llama3-70b", "--weights", "fp8"], 0.45),
    "70b-bf16": ("llama3_70b_bf16_l20", ["--model", "llama3-70b", "--layers", "20"], 0.6),
    "70b-fp8-l20": (
        "llama3_70b_fp8_l20",
        ["--model", "llama3-70b", "--weights", "fp8", "--layers", "20"],
        1.0,
    ),
}


def run_all(args) -> int:
    t0 = time.time()
    end = t0 + args.deadline_s
    os.makedirs(args.out_dir, exist_ok=True)
    # the GPU's name from nvidia-smi: a CUDA context in this process would hold memory the parts measure
    q = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
    gpu = subprocess.run(q, capture_output=True, text=True).stdout.splitlines()[0].strip()
    slug = args.prefix or gpu.lower().replace("nvidia", "").split()[0]
    print(f"# {gpu} ({slug}); parts {args.parts}; deadline {args.deadline_s:.0f}s", flush=True)
    failed = []
    names = [p.strip() for p in args.parts.split(",") if p.strip()]
    for i, name in enumerate(names):
        stem, extra, share = PARTS[name]
        left = end - time.time()
        if left < 20:
            print(f"# {name}: not run, past the deadline", flush=True)
            failed.append(name)
            continue
        until = time.time() + (left if i == len(names) - 1 else left * share)
        if stem == "ceilings":
            cmd = [sys.executable, __file__, "ceilings", "--out", os.path.join(args.out_dir, "ceilings.json")]
        else:
            cmd = [sys.executable, __file__, "run", *extra, "--until", str(until), "--reps", str(args.reps),
                   "--out", os.path.join(args.out_dir, f"{slug}_{stem}_raw.csv")]  # fmt: skip
            if "--layers" not in extra:
                cmd += ["--memory", os.path.join(args.out_dir, f"{slug}_{stem}_memory.json")]
            if args.max_kv_tokens and "--layers" in extra:
                cmd += ["--max-kv-tokens", str(args.max_kv_tokens)]
        print(f"# {name}: {' '.join(cmd[2:])}", flush=True)
        # a part that overruns its share by far (a hang) is stopped, so later parts still run
        try:
            rc = subprocess.run(cmd, timeout=max(30, until - time.time() + 90)).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        if rc != 0:
            failed.append(name)
            print(f"# {name}: exit {rc}", flush=True)
    print(f"# all done in {time.time() - t0:.0f}s; failed: {failed or 'none'}", flush=True)
    return 1 if failed else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="measure one model")
    p.add_argument("--model", choices=sorted(MODELS), default="llama3-8b")
    p.add_argument("--weights", choices=["bf16", "fp8"], default="bf16")
    p.add_argument(
        "--layers", type=int, help="build this many layers and scale to the model's (default: all)"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--memory", help="measure the KV capacity and write it here (JSON)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--max-kv-tokens", type=int, default=0, help="largest decode KV (default: the capacity)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--no-compile", dest="compile", action="store_false", help="eager kernels")
    p.add_argument(
        "--fp8-gemm", choices=["auto", "cublas"], default="auto", help="FP8 GEMMs of few rows (see above)"
    )
    p.add_argument("--until", type=float, help="measure no point after this Unix time")
    p = sub.add_parser("ceilings", help="copy bandwidth and matrix rates")
    p.add_argument("--out", required=True)
    p = sub.add_parser("all", help="the whole calibration, each part in its own process")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--parts", default="ceilings,8b,70b-fp8")
    p.add_argument("--deadline-s", type=float, default=540)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--prefix", help="file-name prefix (default: from the GPU's name, e.g. h200)")
    p.add_argument("--max-kv-tokens", type=int, default=0, help="largest decode KV of the layer-subset parts")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        if args.model != "tiny" and args.device == "cpu":
            raise SystemExit("a full-size model on the CPU would take hours: use --model tiny")
        if not args.memory and not args.max_kv_tokens:
            args.max_kv_tokens = 4096 if args.model == "tiny" else 393216
        return run_part(args)
    if args.cmd == "ceilings":
        return ceilings(args)
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
