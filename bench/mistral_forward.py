"""Mistral port vs transformers' PyTorch MistralForCausalLM: load time, memory, forward tokens/s.

    python bench/mistral_forward.py --shape=small --dtype=bfloat16 --batch=64 --seq=300   # CPU
    python bench/mistral_forward.py --shape=7b --dtype=bfloat16 --batch=64 --seq=300      # one GPU

Random weights at the chosen shape. ``--checkpoint_mode=write`` (default) makes the PyTorch model
on the device, ``save_pretrained``s it (sharded, 5 GB shards; 14.5 GB for 7B in bf16) to a temp
dir, then times our streaming loader and ``from_pretrained`` on the same files (page cache warm
for both). ``--checkpoint_mode=random`` skips the files: both models get random weights made
directly on the device, and the load figures are then init times. Forward: full logits for
``[batch, seq]`` random tokens, best of ``--repeats`` after a compile/warm-up call; PyTorch uses
its default SDPA attention, the port materialises the attention pattern (it is a hook site).
Prints one JSON line.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with PyTorch

import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/ (no shadowing)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from logic_jax.models import mistral  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("shape", "small", ["small", "7b"], "Model shape: MistralConfig.small() or Mistral-7B-v0.1.")
flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "Params and compute dtype (both frameworks).")
flags.DEFINE_integer("batch", 64, "Prompts per forward.")
flags.DEFINE_integer("seq", 300, "Tokens per prompt.")
flags.DEFINE_integer("repeats", 3, "Timed forwards after warm-up; the best is reported.")
flags.DEFINE_enum("checkpoint_mode", "write", ["write", "random"], "Write a checkpoint and load it, or random init on device.")
flags.DEFINE_enum("mesh", "none", list(mistral.sharding.MODES), "Port only: place params over all devices.")
flags.DEFINE_bool("torch", True, "Also run transformers' PyTorch model.")
flags.DEFINE_string("workdir", None, "Where to write the checkpoint (default: a temp dir, removed after).")

GB = 1e9


class PeakRSS:
    """Peak resident set size of this process while the block runs (sampled every 5 ms)."""

    def __enter__(self):
        self.peak = self.start = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def hf_config(config: mistral.MistralConfig):
    """transformers' MistralConfig for our config."""
    from transformers import MistralConfig as HFConfig

    hf = mistral.loading.config_to_hf(config)
    del hf["architectures"], hf["model_type"]  # fixed by the class
    return HFConfig(**hf)


def best_time(run, repeats: int) -> tuple[float, float]:
    """(first call incl. compile, best of ``repeats`` later calls) in seconds."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return first, min(times)


def jax_device_peak() -> float | None:
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats["peak_bytes_in_use"] / GB if "peak_bytes_in_use" in stats else None


def bench_port(config, checkpoint: Path | None, tokens: np.ndarray) -> dict:
    dtype = jnp.dtype(FLAGS.dtype)
    shardings = None
    if FLAGS.mesh != "none":
        mesh = mistral.make_mesh()
        shardings = mistral.param_shardings(mistral.abstract_params(config, dtype), mesh, FLAGS.mesh)
    with PeakRSS() as rss:
        start = time.perf_counter()
        if checkpoint is not None:
            _, params = mistral.load_params(checkpoint, dtype, shardings=shardings, config=config)
        else:
            params = mistral.init_params(config, jax.random.key(0), dtype, shardings=shardings)
        jax.block_until_ready(params)
        load_s = time.perf_counter() - start
    forward = jax.jit(lambda p, t: mistral.make_forward(config)(p, t)[0])
    device_tokens = jnp.asarray(tokens)
    first, best = best_time(lambda: forward(params, device_tokens).block_until_ready(), FLAGS.repeats)
    result = dict(
        load_s=round(load_s, 3),
        load_host_rss_peak_gb=round(rss.peak / GB, 3),
        load_host_rss_growth_gb=round((rss.peak - rss.start) / GB, 3),
        param_gb=round(sum(x.nbytes for x in jax.tree.leaves(params)) / GB, 3),
        compile_and_first_forward_s=round(first, 3),
        forward_s=round(best, 4),
        tokens_per_s=round(tokens.size / best, 1),
        device_peak_gb=jax_device_peak(),
    )
    del params
    gc.collect()
    return result


def bench_torch(config, checkpoint: Path | None, tokens: np.ndarray, device: str) -> dict:
    import torch
    from transformers import MistralForCausalLM

    dtype = getattr(torch, FLAGS.dtype)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        start = time.perf_counter()
        if checkpoint is not None:
            model = MistralForCausalLM.from_pretrained(checkpoint, dtype=dtype).to(device)  # no accelerate needed
        else:
            model = random_torch_model(config, device, dtype)
        if device == "cuda":
            torch.cuda.synchronize()
        load_s = time.perf_counter() - start
    model.eval()
    input_ids = torch.tensor(tokens, device=device)

    def run():
        with torch.no_grad():
            model(input_ids).logits
        if device == "cuda":
            torch.cuda.synchronize()

    first, best = best_time(run, FLAGS.repeats)
    return dict(
        load_s=round(load_s, 3),
        load_host_rss_peak_gb=round(rss.peak / GB, 3),
        load_host_rss_growth_gb=round((rss.peak - rss.start) / GB, 3),
        attn_implementation=model.config._attn_implementation,
        first_forward_s=round(first, 3),
        forward_s=round(best, 4),
        tokens_per_s=round(tokens.size / best, 1),
        device_peak_gb=round(torch.cuda.max_memory_allocated() / GB, 3) if device == "cuda" else None,
        threads=torch.get_num_threads(),
    )


def random_torch_model(config, device: str, dtype):
    import torch
    from transformers import MistralForCausalLM

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return MistralForCausalLM(hf_config(config)).eval()
    finally:
        torch.set_default_dtype(previous)


def write_checkpoint(config, directory: Path, device: str) -> float:
    """Random PyTorch model made on ``device``, saved as sharded safetensors; returns seconds."""
    import torch

    start = time.perf_counter()
    model = random_torch_model(config, device, getattr(torch, FLAGS.dtype))
    model.save_pretrained(directory, max_shard_size="5GB")
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return time.perf_counter() - start


def main(argv):
    del argv
    config = mistral.MistralConfig.small() if FLAGS.shape == "small" else mistral.MistralConfig.mistral_7b_v01()
    platform = jax.devices()[0].platform
    torch_device = "cuda" if platform == "gpu" else "cpu"
    tokens = np.random.RandomState(0).randint(0, config.vocab_size, (FLAGS.batch, FLAGS.seq)).astype(np.int32)
    record = dict(
        bench="mistral_forward",
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        shape=FLAGS.shape,
        dtype=FLAGS.dtype,
        batch=FLAGS.batch,
        seq=FLAGS.seq,
        checkpoint_mode=FLAGS.checkpoint_mode,
        mesh=FLAGS.mesh,
        device=f"{jax.device_count()}x {jax.devices()[0].device_kind}",
        cpu_count=os.cpu_count(),
        jax=jax.__version__,
    )
    with tempfile.TemporaryDirectory(dir=FLAGS.workdir) as tmp:
        checkpoint = None
        if FLAGS.checkpoint_mode == "write":
            checkpoint = Path(tmp)
            record["write_checkpoint_s"] = round(write_checkpoint(config, checkpoint, torch_device), 3)
            record["checkpoint_gb"] = round(sum(f.stat().st_size for f in checkpoint.glob("*.safetensors")) / GB, 3)
        record["port"] = bench_port(config, checkpoint, tokens)
        if FLAGS.torch:
            import torch

            record["torch_version"] = torch.__version__
            record["torch"] = bench_torch(config, checkpoint, tokens, torch_device)
            record["speedup_forward"] = round(record["port"]["tokens_per_s"] / record["torch"]["tokens_per_s"], 3)
            record["speedup_load"] = round(record["torch"]["load_s"] / record["port"]["load_s"], 3)
    print(json.dumps(record))


if __name__ == "__main__":
    app.run(main)
