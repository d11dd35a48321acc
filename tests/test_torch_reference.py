"""bench/torch_reference.py trains the JAX model the JAX way, and takes the JAX config's numerics:
TF32 and bfloat16 map to PyTorch's."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench import torch_reference  # noqa: E402
from logic_jax.models import gpt  # noqa: E402
from logic_jax.problem.sampler import sample  # noqa: E402
from logic_jax.train import config as config_lib  # noqa: E402
from logic_jax.train import state as state_lib  # noqa: E402
from logic_jax.train import step as step_lib  # noqa: E402
from train_fixtures import tiny_config  # noqa: E402


def test_the_reference_trains_the_jax_model_the_jax_way():
    # The same initial parameters and batches, 12 steps each: the same parameters after, weight
    # decay (on the weight matrices only, not the 2-D b_Q / b_V) and clipping included.
    c = tiny_config(**{"model.n_layers": 2, "model.n_heads": 2, "model.d_model": 16, "model.d_mlp": 32})
    c.optim.update(lr=3e-3, warmup_steps=4, decay_steps=10, weight_decay=1.0, clip_norm=0.5)
    model_cfg, problem_cfg = config_lib.model_config(c), config_lib.problem_config(c)
    keys, hp = state_lib.stack_members(state_lib.members_of(config_lib.to_dict(c)))
    state = state_lib.init_state(jnp.asarray(keys[0]), {k: jnp.asarray(v[0]) for k, v in hp.items()}, model_cfg)
    torch.manual_seed(0)
    model, opt, sched = torch_reference.make_training(c, torch.device("cpu"))
    torch_reference.load_jax_params(model, jax.tree.map(np.asarray, state.params))
    forward = gpt.make_forward(model_cfg)

    @jax.jit
    def jax_step(state, tokens, mask):
        (loss, _), grads = jax.value_and_grad(step_lib.loss_fn, has_aux=True)(state.params, tokens, mask, forward)
        updates, opt_state = state_lib.optimizer(state.hparams).update(grads, state.opt_state, state.params)
        return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state), loss

    torch.set_float32_matmul_precision("highest")
    for i in range(12):
        batch = jax.device_get(sample(jax.random.PRNGKey(i), problem_cfg, c.batch_size))
        state, jax_loss = jax_step(state, batch.tokens, batch.answer_mask)
        tokens, mask = torch.tensor(np.asarray(batch.tokens), dtype=torch.long), torch.tensor(np.asarray(batch.answer_mask))
        torch_loss = torch_reference.train_step(model, opt, sched, tokens, mask, c, torch.device("cpu"))
        assert abs(float(jax_loss) - torch_loss.item()) < 1e-5, i
    mirror = torch_reference.make_training(c, torch.device("cpu"))[0]
    torch_reference.load_jax_params(mirror, jax.tree.map(np.asarray, state.params))
    ours, theirs = dict(mirror.named_parameters()), dict(model.named_parameters())
    gaps = {name: float((ours[name] - theirs[name]).detach().abs().max()) for name in theirs}
    assert max(gaps.values()) < 2e-6, sorted(gaps.items(), key=lambda kv: -kv[1])[:3]
    assert set(gaps) >= {"blocks.0.q.bias", "blocks.1.v.bias", "W_pos", "unembed.weight"}




def _run(*flags):
    cmd = [sys.executable, "bench/torch_reference.py", "--config=configs/tiny_cpu.py", "--seeds=1", "--steps=2", "--nojax",
           "--config.batch_size=8", *flags]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    return proc


@pytest.mark.parametrize(
    "flags, precision, autocast",
    [
        ((), "high", False),  # JAX's default allows TF32 on a GPU
        (("--config.model.matmul_precision=float32",), "highest", False),
        (("--config.model.matmul_precision=BF16_BF16_F32",), "highest", True),
        (("--config.model.dtype=bfloat16",), "high", True),
    ],
)
def test_numerics_follow_the_config(flags, precision, autocast):
    proc = _run(*flags)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout[proc.stdout.index("{\n"):])
    assert (out["torch_matmul_precision"], out["torch_autocast_bf16"]) == (precision, autocast)
    first, last = out["loss_first_last"][0]
    assert out["with_data_seed_steps_per_s"] > 0 and first > 0 and last > 0


def test_a_precision_without_equivalent_is_named():
    proc = _run("--config.model.matmul_precision=bogus")
    assert proc.returncode != 0 and "model.matmul_precision" in proc.stderr and "bogus" in proc.stderr
