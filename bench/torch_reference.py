r"""A PyTorch reference of the same model and training, run seed after seed: the JAX/PyTorch ratio.

    python bench/torch_reference.py                     # CPU here; CUDA when torch sees a GPU
    python bench/torch_reference.py --seeds=8 --steps=30 --config=configs/small.py --device=cuda

Benchmark-only (torch is a test extra, never imported by the package). The model is the one of
logic_jax/models/gpt.py: pre-LayerNorm, tanh GELU, learned positions, causal attention
(``scaled_dot_product_attention``), no key bias, untied unembedding with bias, GPT-2 init;
training is AdamW (decay on matrices only), warm-up + cosine schedule, global-norm clipping,
cross-entropy on the answer tokens (from every position's logits, as a PyTorch user would write
it; the JAX step computes the last block's MLP and the logits from the ANSWER token on only, 12%
fewer FLOPs at configs/small.py's sizes). Numerics follow the config: ``model.matmul_precision``
becomes ``torch.set_float32_matmul_precision`` (JAX's "default" allows TF32 on a GPU: "high"),
``model.dtype=bfloat16`` and bfloat16 matmuls become bfloat16 autocast. Data is what a PyTorch
user would write: problems drawn on the host by the plain Python sampler
(bench/python_sampler.py), padded into a tensor each step. Reported: seed-steps/s with the host
data pipeline and with pre-drawn batches (model only), then the JAX side (bench/train_seeds.py
in a subprocess, N seeds vmapped) and the ratio.
"""

import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as TF  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from bench import python_sampler  # noqa: E402
from bench.report import BF16_MATMULS, bf16_numerics  # noqa: E402
from logic_jax.problem import format as fmt  # noqa: E402

F = flags.FLAGS


def define_flags():  # at run time, so that tests can import the model and the training step
    config_flags.DEFINE_config_file("config", os.path.join(REPO, "configs", "tiny_cpu.py"), "Model, problem, batch size, optimizer.")
    flags.DEFINE_integer("seeds", 8, "Seeds, trained one after the other.")
    flags.DEFINE_integer("steps", 20, "Timed steps per seed (after 3 warm-up steps).")
    flags.DEFINE_string("device", None, "torch device (default: cuda if available, else cpu).")
    flags.DEFINE_bool("jax", True, "Also run the JAX side (bench/train_seeds.py, N = --seeds) and print the ratio.")
    flags.DEFINE_string("out", None, "Also write the JSON here.")


class Block(torch.nn.Module):
    def __init__(self, d, h, d_mlp, eps, std, out_std):
        super().__init__()
        self.h, self.e = h, d // h
        self.ln1 = torch.nn.LayerNorm(d, eps=eps)
        self.q = torch.nn.Linear(d, d)
        self.k = torch.nn.Linear(d, d, bias=False)
        self.v = torch.nn.Linear(d, d)
        self.o = torch.nn.Linear(d, d)
        self.ln2 = torch.nn.LayerNorm(d, eps=eps)
        self.fc = torch.nn.Linear(d, d_mlp)
        self.proj = torch.nn.Linear(d_mlp, d)
        for lin, s in ((self.q, std), (self.k, std), (self.v, std), (self.o, out_std), (self.fc, std), (self.proj, out_std)):
            torch.nn.init.normal_(lin.weight, std=s)
            if lin.bias is not None:
                torch.nn.init.zeros_(lin.bias)

    def forward(self, x):
        b, n, d = x.shape
        y = self.ln1(x)
        q, k, v = (t.view(b, n, self.h, self.e).transpose(1, 2) for t in (self.q(y), self.k(y), self.v(y)))
        z = TF.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(z.transpose(1, 2).reshape(b, n, d))
        return x + self.proj(TF.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(torch.nn.Module):
    def __init__(self, m, vocab, max_len):
        super().__init__()
        std, out_std = m.init_std, m.init_std / math.sqrt(2 * m.n_layers)
        self.W_E = torch.nn.Parameter(torch.randn(vocab, m.d_model) * std)
        self.W_pos = torch.nn.Parameter(torch.randn(max_len, m.d_model) * 0.01)
        self.blocks = torch.nn.ModuleList([Block(m.d_model, m.n_heads, m.d_mlp, m.ln_eps, std, out_std) for _ in range(m.n_layers)])
        self.ln_final = torch.nn.LayerNorm(m.d_model, eps=m.ln_eps)
        self.unembed = torch.nn.Linear(m.d_model, vocab)
        torch.nn.init.normal_(self.unembed.weight, std=std)
        torch.nn.init.zeros_(self.unembed.bias)

    def forward(self, tokens):
        x = self.W_E[tokens] + self.W_pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_final(x))


def batch_of(rng, problem, batch_size):
    """Tokens [B, L] and the answer mask, from the plain Python sampler."""
    length = fmt.seq_len(problem.depth)
    tokens = np.full((batch_size, length), fmt.PAD, np.int64)
    mask = np.zeros((batch_size, length), bool)
    for i in range(batch_size):
        context, answer, _ = python_sampler.sample_problem(rng, problem.depth, problem.p_logop, problem.p_and)
        row = context + answer
        tokens[i, : len(row)] = row
        mask[i, len(context) : len(row)] = True
    return torch.from_numpy(tokens), torch.from_numpy(mask)


# The JAX config's numerics in PyTorch terms. JAX's "default" lets a GPU use TF32 for float32
# matmuls, which is PyTorch's "high"; PyTorch's own default is "highest" (no TF32). bfloat16
# matmuls on float32 activations have no float32-precision name in PyTorch: autocast does them.
TORCH_MATMUL_PRECISION = dict(default="high", bfloat16="high", tensorfloat32="high", high="high", TF32_TF32_F32="high", float32="highest", highest="highest", F32_F32_F32="highest")


def numerics(model_cfg, device):
    """Set the float32 matmul precision; return the autocast context of the model's numerics."""
    precision = model_cfg.get("matmul_precision", "default")
    if precision not in TORCH_MATMUL_PRECISION and precision not in BF16_MATMULS:
        raise ValueError(f"config key 'model.matmul_precision': no PyTorch equivalent for {precision!r}")
    torch.set_float32_matmul_precision(TORCH_MATMUL_PRECISION.get(precision, "highest"))
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_numerics(model_cfg))


def make_training(config, device):
    """The model, AdamW (decay on the weight matrices only) and the warm-up + cosine schedule."""
    m, o, problem = config.model, config.optim, config.problem
    model = GPT(m, fmt.VOCAB_SIZE, fmt.seq_len(problem.depth)).to(device)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=o.weight_decay), dict(params=no_decay, weight_decay=0.0)], lr=o.lr, betas=(o.b1, o.b2), eps=o.eps)

    def lr_factor(t):
        if t < o.warmup_steps:
            return (t + 1) / max(o.warmup_steps, 1)
        frac = min(max((t - o.warmup_steps) / max(o.decay_steps - o.warmup_steps, 1), 0.0), 1.0)
        return o.end_lr_frac + (1 - o.end_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac))

    return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)


def train_step(model, opt, sched, tokens, mask, config, device):
    """One step: cross-entropy on the answer tokens, clipping, AdamW, the schedule; the loss tensor."""
    with numerics(config.model, device):
        logits = model(tokens[:, :-1]).float()
    ce = TF.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none")
    m_ = mask[:, 1:].reshape(-1).float()
    loss = (ce * m_).sum() / m_.sum().clamp(min=1)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip_norm)
    opt.step()
    sched.step()
    return loss


def load_jax_params(model, params):
    """Copy one seed's JAX parameters (TransformerLens layouts) into ``model`` (for parity tests)."""
    t = lambda x: torch.tensor(np.ascontiguousarray(np.asarray(x, np.float32)))  # noqa: E731
    flat = lambda x: np.asarray(x).reshape(x.shape[0], -1)  # noqa: E731  [d, h, e] -> [d, h*e]
    with torch.no_grad():
        model.W_E.copy_(t(params["W_E"]))
        model.W_pos.copy_(t(params["W_pos"]))
        model.unembed.weight.copy_(t(np.asarray(params["W_U"]).T))
        model.unembed.bias.copy_(t(params["b_U"]))
        model.ln_final.weight.copy_(t(params["ln_final"]["scale"]))
        model.ln_final.bias.copy_(t(params["ln_final"]["bias"]))
        for i, block in enumerate(model.blocks):
            p = params["blocks"][i]  # nnx's pure dicts key layers by int
            a, mlp = p["attn"], p["mlp"]
            for lin, w in ((block.q, a["W_Q"]), (block.k, a["W_K"]), (block.v, a["W_V"])):
                lin.weight.copy_(t(flat(w).T))
            block.q.bias.copy_(t(np.asarray(a["b_Q"]).reshape(-1)))
            block.v.bias.copy_(t(np.asarray(a["b_V"]).reshape(-1)))
            block.o.weight.copy_(t(np.asarray(a["W_O"]).reshape(-1, np.shape(a["W_O"])[-1]).T))
            block.o.bias.copy_(t(a["b_O"]))
            for ln, name in ((block.ln1, "ln1"), (block.ln2, "ln2")):
                ln.weight.copy_(t(p[name]["scale"]))
                ln.bias.copy_(t(p[name]["bias"]))
            block.fc.weight.copy_(t(np.asarray(mlp["W_in"]).T))
            block.fc.bias.copy_(t(mlp["b_in"]))
            block.proj.weight.copy_(t(np.asarray(mlp["W_out"]).T))
            block.proj.bias.copy_(t(mlp["b_out"]))


def train_one_seed(seed, config, device, steps, pregenerated=None):
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model, opt, sched = make_training(config, device)
    warmup = 3
    losses = []
    for t in range(warmup + steps):
        if t == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        tokens, mask = pregenerated[t % len(pregenerated)] if pregenerated else batch_of(rng, config.problem, config.batch_size)
        tokens, mask = tokens.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        loss = train_step(model, opt, sched, tokens, mask, config, device)
        losses.append(loss.item())  # a user logs the loss: one sync per step
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, losses


def main(argv):
    del argv
    config = F.config
    device = torch.device(F.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = dict(torch=torch.__version__, device=str(device), threads=torch.get_num_threads(), seeds=F.seeds, steps=F.steps, batch_size=config.batch_size, model=config.model.to_dict(), depth=config.problem.depth)
    numerics(config.model, device)
    out["torch_autocast_bf16"] = bf16_numerics(config.model)
    out["torch_matmul_precision"] = torch.get_float32_matmul_precision()
    # With the host data pipeline, seed after seed.
    total, first_last = 0.0, []
    for s in range(F.seeds):
        seconds, losses = train_one_seed(s, config, device, F.steps)
        total += seconds
        first_last.append((losses[0], losses[-1]))
    out["with_data_seed_steps_per_s"] = F.seeds * F.steps / total
    out["loss_first_last"] = first_last
    # Model only: pre-drawn batches (the data pipeline's share = 1 - with/without).
    rng = random.Random(1234)
    batches = [batch_of(rng, config.problem, config.batch_size) for _ in range(8)]
    total = 0.0
    for s in range(F.seeds):
        seconds, _ = train_one_seed(s, config, device, F.steps, pregenerated=batches)
        total += seconds
    out["model_only_seed_steps_per_s"] = F.seeds * F.steps / total
    out["data_share_of_step"] = 1 - out["with_data_seed_steps_per_s"] / out["model_only_seed_steps_per_s"]
    print(json.dumps(out), file=sys.stderr, flush=True)
    if F.jax:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            path = f.name
        cmd = [sys.executable, os.path.join(REPO, "bench", "train_seeds.py"), f"--seeds={F.seeds}", f"--steps={F.steps}", f"--out={path}"]
        cmd += [a for a in sys.argv[1:] if a.startswith("--config")]  # the same config and overrides
        env = dict(os.environ)
        if device.type == "cpu":
            env.setdefault("JAX_PLATFORMS", "cpu")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        with open(path) as f:
            jax_row = json.load(f)["rows"][0]
        out["jax_vmapped_seed_steps_per_s"] = jax_row["vmapped_seed_steps_per_s"]
        out["jax_sequential_seed_steps_per_s"] = jax_row["sequential_seed_steps_per_s"]
        out["ratio_jax_vmapped_over_torch"] = jax_row["vmapped_seed_steps_per_s"] / out["with_data_seed_steps_per_s"]
        out["ratio_jax_sequential_over_torch"] = jax_row["sequential_seed_steps_per_s"] / out["with_data_seed_steps_per_s"]
    from bench.report import emit

    emit(out, F.out)


if __name__ == "__main__":
    define_flags()
    app.run(main)
