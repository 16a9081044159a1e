"""Measure the step time of a Llama-3-8B-shaped decoder on one GPU (random bf16 weights).

Shape: 32 layers, hidden 4096, 32 query heads and 8 KV heads of 128, MLP 14336 (SwiGLU), vocab 128256,
RMSNorm and rotary embeddings. Timing does not depend on weight values, so the weights are random.

Three tables, one CSV (``kind,batch,context_len,prefill_tokens,ms``), every step captured in a CUDA graph as
serving engines do and replayed (median of the replays, CUDA events):

* ``decode``: one decode step for ``batch`` sequences of ``context_len`` tokens each, attending over the cache.
  Decode attention uses the GQA-as-queries form: the 4 query heads that share a KV head are passed as 4 query
  rows against that head's keys, which reads each K/V byte once, like a paged decode kernel.
* ``prefill``: one prompt of ``prefill_tokens`` tokens (causal attention), logits for the last token only.
* ``mixed``: one step that carries a prefill chunk and a decoding batch through the same dense layers
  (vLLM's chunked prefill).

``--fused`` runs the step through ``torch.compile`` first, which fuses the norms, rotary and activation kernels
as vLLM's compiled model does (the in-place write of the step's new K/V, one token per sequence, is left out:
compiling it would copy the whole cache). The shipped profile is fitted to the fused table.

Usage, on the GPU:
    python3 calibration/measure_h100.py --fused --deadline-s 530 --out calibration/h100_llama3_8b_raw.csv
    python3 calibration/measure_h100.py --out calibration/h100_llama3_8b_unfused_raw.csv
(``--tiny --device cpu`` runs a scaled-down model to test the script without a GPU.)
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import time

import torch
import torch.nn.functional as F


class Shape:
    def __init__(self, tiny: bool):
        if tiny:
            self.layers, self.hidden, self.heads, self.kv_heads, self.head_dim = 2, 256, 8, 2, 32
            self.mlp, self.vocab = 512, 1000
        else:
            self.layers, self.hidden, self.heads, self.kv_heads, self.head_dim = 32, 4096, 32, 8, 128
            self.mlp, self.vocab = 14336, 128256
        self.group = self.heads // self.kv_heads


class Model:
    def __init__(self, s: Shape, device, dtype, max_kv_tokens: int):
        self.s, self.device, self.dtype = s, device, dtype

        def w(*shape):
            return torch.randn(*shape, device=device, dtype=dtype) * 0.02

        qkv_out = (s.heads + 2 * s.kv_heads) * s.head_dim
        self.embed = w(s.vocab, s.hidden)
        self.lm_head = w(s.vocab, s.hidden)
        self.norm_f = torch.ones(s.hidden, device=device, dtype=dtype)
        self.layers = []
        for _ in range(s.layers):
            self.layers.append(
                {
                    "n1": torch.ones(s.hidden, device=device, dtype=dtype),
                    "qkv": w(qkv_out, s.hidden),
                    "o": w(s.hidden, s.heads * s.head_dim),
                    "n2": torch.ones(s.hidden, device=device, dtype=dtype),
                    "gate_up": w(2 * s.mlp, s.hidden),
                    "down": w(s.hidden, s.mlp),
                }
            )
        # one KV buffer, viewed as [batch, kv_heads, len, head_dim] per layer for each grid point
        self.kv = torch.randn(
            s.layers, 2, max_kv_tokens * s.kv_heads * s.head_dim, device=device, dtype=dtype
        )
        inv = 1.0 / (
            10000 ** (torch.arange(0, s.head_dim, 2, device=device, dtype=torch.float32) / s.head_dim)
        )
        self.inv_freq = inv

    def cache(self, layer: int, batch: int, length: int):
        s = self.s
        n = batch * s.kv_heads * length * s.head_dim
        k = self.kv[layer, 0, :n].view(batch, s.kv_heads, length, s.head_dim)
        v = self.kv[layer, 1, :n].view(batch, s.kv_heads, length, s.head_dim)
        return k, v

    def rope(self, x, pos):
        # x: [T, H, D]; pos: [T]
        f = pos.float()[:, None] * self.inv_freq[None, :]
        cos, sin = f.cos().to(x.dtype)[:, None, :], f.sin().to(x.dtype)[:, None, :]
        x1, x2 = x[..., ::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)

    def forward(self, tokens, pos, n_prefill: int, batch: int, ctx: int, write_kv: bool = True):
        """Tokens: the prefill chunk's tokens (n_prefill) followed by one token per decoding sequence (batch).

        Decoding sequences hold ``ctx`` tokens each (the last one is this step's token, written here).
        Returns the sampled token of the prefill's last position and of every decoding sequence.
        """
        s = self.s
        x = self.embed[tokens]
        for li, L in enumerate(self.layers):
            h = F.rms_norm(x, (s.hidden,), L["n1"])
            qkv = h @ L["qkv"].t()
            q, k, v = qkv.split([s.heads * s.head_dim, s.kv_heads * s.head_dim, s.kv_heads * s.head_dim], -1)
            q = self.rope(q.view(-1, s.heads, s.head_dim), pos)
            k = self.rope(k.view(-1, s.kv_heads, s.head_dim), pos)
            v = v.view(-1, s.kv_heads, s.head_dim)
            outs = []
            if n_prefill:
                qp = q[:n_prefill].transpose(0, 1)[None]  # [1, H, N, D]
                kp = k[:n_prefill].transpose(0, 1)[None].repeat_interleave(s.group, dim=1)
                vp = v[:n_prefill].transpose(0, 1)[None].repeat_interleave(s.group, dim=1)
                outs.append(F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)[0].transpose(0, 1))
            if batch:
                kc, vc = self.cache(li, batch, ctx)
                if write_kv:  # torch.compile would copy the whole cache to functionalize this write
                    kc[:, :, ctx - 1] = k[n_prefill:]
                    vc[:, :, ctx - 1] = v[n_prefill:]
                qd = q[n_prefill:].view(batch, s.kv_heads, s.group, s.head_dim)
                od = F.scaled_dot_product_attention(qd, kc, vc)  # [B, KVH, G, D]
                outs.append(od.reshape(batch, s.heads, s.head_dim))
            a = torch.cat(outs, 0) if len(outs) > 1 else outs[0]
            x = x + a.reshape(-1, s.heads * s.head_dim) @ L["o"].t()
            h = F.rms_norm(x, (s.hidden,), L["n2"])
            g, u = (h @ L["gate_up"].t()).chunk(2, -1)
            x = x + (F.silu(g) * u) @ L["down"].t()
        rows = []
        if n_prefill:
            rows.append(x[n_prefill - 1 : n_prefill])
        if batch:
            rows.append(x[n_prefill:])
        last = torch.cat(rows, 0)
        logits = F.rms_norm(last, (s.hidden,), self.norm_f) @ self.lm_head.t()
        return logits.argmax(-1)


def timed(fn, reps: int, device) -> float:
    if device.type == "cuda":
        times = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
    else:
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return times[len(times) // 2]


def inputs(m: Model, n_prefill: int, batch: int, ctx: int):
    total = n_prefill + batch
    tokens = torch.randint(0, m.s.vocab, (total,), device=m.device)
    pos = torch.cat(
        [torch.arange(n_prefill, device=m.device), torch.full((batch,), ctx - 1, device=m.device)]
    ).long()
    return tokens, pos


def measure(m: Model, n_prefill: int, batch: int, ctx: int, reps: int, graphs: bool, forward=None) -> float:
    """Median time of one step; on a GPU the step is captured in a CUDA graph and replayed."""
    tokens, pos = inputs(m, n_prefill, batch, ctx)
    forward = forward or m.forward

    def run():
        forward(tokens, pos, n_prefill, batch, ctx)

    with torch.inference_mode():
        for _ in range(2):
            run()
        if not graphs:
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="scaled-down model (tests the script on a CPU)")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--max-kv-tokens", type=int, default=393216)
    ap.add_argument(
        "--fused", action="store_true", help="run every step through torch.compile (fused kernels)"
    )
    ap.add_argument("--deadline-s", type=float, default=1e9, help="measure no further point after this")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16
    shape = Shape(args.tiny)
    if args.tiny:
        batches, ctxs = [1, 4, 16], [64, 256]
        prefills, mixed = [16, 64, 256], [(64, 4, 256)]
    else:
        batches = [1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256]
        ctxs = [128, 512, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 16384]
        if args.fused:  # each new shape may compile: a smaller grid over the same range
            batches = [1, 2, 4, 8, 16, 32, 64, 128, 192, 256]
            ctxs = [128, 512, 1024, 2048, 3072, 4096, 8192, 16384]
        prefills = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
        mixed = [
            (128, 8, 1024),
            (256, 32, 1024),
            (256, 128, 1024),
            (512, 64, 1024),
            (512, 128, 2048),
            (512, 256, 1536),
            (1024, 16, 512),
            (1024, 64, 2048),
            (1024, 128, 1024),
            (2048, 16, 4096),
            (2048, 128, 1024),
            (2048, 256, 1024),
            (4096, 32, 2048),
            (7936, 256, 512),
        ]
    graphs = device.type == "cuda"
    torch.manual_seed(0)
    t0 = time.time()
    m = Model(shape, device, dtype, args.max_kv_tokens)
    forward = m.forward
    info = {"torch": torch.__version__, "python": platform.python_version()}
    if args.fused:
        import torch._dynamo as dynamo

        dynamo.config.cache_size_limit = 64
        compiled = torch.compile(m.forward)

        def forward(*a):
            # torch.compile would copy the whole cache to functionalize the in-place K/V write of this
            # step's token; the write is one token per sequence, so the fused step leaves it out
            return compiled(*a, write_kv=False)

        info["kernels"] = "torch.compile"
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        torch.backends.cuda.matmul.allow_tf32 = True
    print("# " + " ".join(f"{k}={v}" for k, v in info.items()), f"init {time.time() - t0:.1f}s", flush=True)
    points = [("decode", 0, b, ctx) for ctx in ctxs for b in batches if b * ctx <= args.max_kv_tokens]
    points += [("prefill", n, 0, 0) for n in prefills] + [("mixed", n, b, ctx) for n, b, ctx in mixed]
    with open(args.out, "w", newline="") as fh:
        fh.write("# " + " ".join(f"{k}={v}" for k, v in info.items()) + "\n")
        w = csv.writer(fh)
        w.writerow(["kind", "batch", "context_len", "prefill_tokens", "ms"])
        for kind, n, b, ctx in points:
            if time.time() - t0 > args.deadline_s:
                print(f"{kind} prefill={n} batch={b} ctx={ctx}: skipped, past the deadline", flush=True)
                continue
            reps = args.reps if kind == "decode" else max(5, args.reps // 3)
            ms = measure(m, n, b, ctx, reps, graphs, forward=forward)
            w.writerow([kind, b, ctx, n, f"{ms:.4f}"])
            fh.flush()
            print(f"{kind:7s} prefill={n:5d} batch={b:4d} ctx={ctx:5d} {ms:8.3f} ms", flush=True)
    print(f"done in {time.time() - t0:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
