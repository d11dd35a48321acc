"""The README's Python snippets run as written, on a tiny run and a tiny Mistral checkpoint; CI runs
its install and test commands."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from logic_jax.train import trainer
from mistral_fixtures import write_tiny_checkpoint
from train_fixtures import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(REPO, "README.md")).read()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, re.S)


def _snippet(marker: str) -> str:
    found = [s for s in SNIPPETS if marker in s]
    assert len(found) == 1, f"README: {len(found)} python snippets contain {marker!r}"
    return found[0]


def test_ci_runs_the_quick_starts_install_and_test_commands():
    quick_start = re.search(r"## Quick start\n\n```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in quick_start.splitlines()]
    ci = [line.strip() for line in open(os.path.join(REPO, ".ci", "run")) if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci == commands[:2], (ci, commands)


def test_the_sampler_snippet():
    namespace = {"key": jax.random.PRNGKey(0)}
    exec(_snippet("from logic_jax.problem.sampler import sample"), namespace)
    batch = namespace["batch"]
    assert batch.tokens.shape[0] == 4096
    assert set(np.asarray(batch.case).tolist()) == {1, 2}  # LogOp, OR, first operand TRUE: "OR TT" and "OR TF"


def test_the_interventions_snippet(tmp_path):
    run = tiny_config(num_seeds=1, num_steps=10, **{"model.n_layers": 2})  # the snippet caches blocks.1
    trainer.train(run, str(tmp_path / "run"))
    code = _snippet("patching.patching_sweep").replace('"runs/tiny"', repr(str(tmp_path / "run"))).replace(", 1000, ", ", 16, ")
    namespace = {}
    exec(code, namespace)
    layers, heads = run.model.n_layers, run.model.n_heads
    assert namespace["ld"].shape == (layers, heads, 3) and namespace["screen"].shape == (layers, heads)
    assert namespace["effect"].shape == (layers, heads) and np.isfinite(namespace["effect"]).all()
    assert np.ptp(np.asarray(namespace["ld"])) > 0  # the patched positions are in the context: the LD moves
    assert namespace["patched_logits"].shape == namespace["logits"].shape


def test_the_mistral_snippet(tmp_path):
    write_tiny_checkpoint(tmp_path)
    code = _snippet("mistral.read_config(DIR)").replace("blocks.3.", "blocks.1.")  # the tiny model has 2 layers
    namespace = {"DIR": str(tmp_path), "tokens": jnp.array([[1, 5, 9, 2]])}
    exec(code, namespace)
    assert namespace["logits"].shape == (1, 4, 128) and set(namespace["cache"]) == {"blocks.1.attn.hook_z"}
