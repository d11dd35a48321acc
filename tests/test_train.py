"""The trainer: loss goes down, vmapped == one at a time, 8 devices == 1, NaN stop, bad input."""

import json
import os
import shutil
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from logic_jax.problem import format as fmt
from logic_jax.train import config as config_lib
from logic_jax.train import evaluate as evaluate_lib
from logic_jax.train import state as state_lib
from logic_jax.train import step as step_lib
from logic_jax.train import trainer
from logic_jax.train.metrics import RunLog
from logic_jax.train import preemption
from logic_jax.train.preemption import StopRequest
from train_fixtures import tensorboard_events, tiny_config


def _run(config, members, num_devices, chunks, n=10):
    """Train ``chunks`` compiled chunks of ``n`` steps; tests share few compiled shapes."""
    model_cfg, problem_cfg = config_lib.model_config(config), config_lib.problem_config(config)
    mesh = step_lib.make_mesh(len(members), num_devices)
    program = step_lib.make_train(model_cfg, problem_cfg, config.batch_size, mesh)
    keys, hparams = state_lib.stack_members(members)
    state = program.init(keys, hparams)
    losses = []
    for _ in range(chunks):
        state, out = program.chunk(state, n)
        losses.append(step_lib.to_host(out)["loss"])
    return jax.tree.map(np.asarray, state), np.concatenate(losses, axis=1), program


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


EIGHT = tiny_config(num_seeds=8)


@pytest.fixture(scope="module")
def eight_on_one():
    """8 seeds, 20 steps, vmapped on one device."""
    return _run(EIGHT, state_lib.members_of(EIGHT), 1, 2)


def test_short_run_improves_the_loss_of_every_seed(eight_on_one):
    state, loss, _ = eight_on_one
    first, last = loss[:, :3].mean(1), loss[:, -3:].mean(1)
    assert np.all(last < first - 0.3), (first, last)
    assert np.all(np.isfinite(loss)) and np.all(state.step == 20)


def test_bfloat16_activations_train_too():
    # Mixed precision: bfloat16 activations, float32 parameters and optimizer state.
    config = tiny_config(num_seeds=2, **{"model.dtype": "bfloat16"})
    state, loss, _ = _run(config, state_lib.members_of(config), 1, 2)
    assert all(x.dtype != jnp.bfloat16 for x in jax.tree.leaves(state))
    assert np.all(np.isfinite(loss)) and np.all(loss[:, -3:].mean(1) < loss[:, :3].mean(1) - 0.3), loss


def test_vmapped_seeds_equal_seeds_trained_one_at_a_time(eight_on_one):
    together, _, _ = eight_on_one
    members = state_lib.members_of(EIGHT)
    for i in (0, 5):
        alone, _, _ = _run(EIGHT, [members[i]], 1, 2)
        for x, y in zip(jax.tree.leaves(together), jax.tree.leaves(alone)):
            np.testing.assert_allclose(x[i], y[0], rtol=1e-4, atol=1e-5)


def test_eight_devices_equal_one(eight_on_one):
    assert jax.device_count() == 8, "tests/conftest.py sets 8 simulated CPU devices"
    one, _, _ = eight_on_one
    eight, _, program = _run(EIGHT, state_lib.members_of(EIGHT), 8, 2)
    assert len(program.sharding.device_set) == 8
    for x, y in zip(jax.tree.leaves(one), jax.tree.leaves(eight)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def _tensorboard_steps(logdir, tag):
    """The steps of scalar ``tag`` that TensorBoard shows: a restart's SessionLog START at step P
    hides the earlier events at steps >= P."""
    from tensorboardX.proto.event_pb2 import SessionLog

    steps = []
    for event in tensorboard_events(logdir):
        if event.HasField("session_log") and event.session_log.status == SessionLog.START:
            steps = [s for s in steps if s < event.step]
        steps += [event.step for v in event.summary.value if v.tag == tag]
    return steps


def test_resume_keeps_the_checkpoint_steps_tensorboard_points(tmp_path):
    trainer.train(tiny_config(num_steps=10), str(tmp_path))
    time.sleep(1.1)  # event files are named by the second they start in, and read in name order
    trainer.train(tiny_config(num_steps=20), str(tmp_path))  # resumes from step 10
    assert _tensorboard_steps(str(tmp_path / "tensorboard"), "train/loss_mean") == [10, 20]


def test_tensorboard_events_are_on_disk_when_their_checkpoint_is_saved(tmp_path, monkeypatch):
    """A kill -9 after a save must not lose the events up to it: the resumed run purges the later
    ones and never writes the earlier ones again."""
    from logic_jax.train.checkpoint import Checkpointer

    on_disk = {}
    save = Checkpointer.save

    def save_and_look(self, step, *args, **kwargs):
        on_disk[step] = _tensorboard_steps(str(tmp_path / "tensorboard"), "train/loss_mean")
        return save(self, step, *args, **kwargs)

    monkeypatch.setattr(Checkpointer, "save", save_and_look)
    trainer.train(tiny_config(num_steps=30), str(tmp_path))
    assert on_disk == {10: [10], 20: [10, 20], 30: [10, 20, 30]}


def test_a_rerun_after_a_kill_before_the_first_checkpoint_shows_each_step_once(tmp_path):
    trainer.train(tiny_config(num_steps=20), str(tmp_path))
    shutil.rmtree(tmp_path / "checkpoints")  # as if killed before its first checkpoint: logs, no checkpoint
    time.sleep(1.1)
    trainer.train(tiny_config(num_steps=20), str(tmp_path))  # from step 0 again
    assert _tensorboard_steps(str(tmp_path / "tensorboard"), "train/loss_mean") == [10, 20]


def test_the_progress_rate_leaves_compilation_out(tmp_path):
    log = RunLog(str(tmp_path), 0, 100, progress=True)
    time.sleep(0.5)  # compiling
    log.after_compile()
    log.train(10, np.zeros(2), np.zeros(2), 10, 0.01, 0.6)
    elapsed = log.bar.format_dict["elapsed"]
    log.close()
    assert elapsed < 0.4, elapsed


def test_a_signal_during_the_last_chunk_lets_the_run_finish(tmp_path, monkeypatch):
    class SignalledInTheFirstChunk(StopRequest):
        calls = 0

        def requested(self):  # the first call is the start-up check, before the first chunk runs
            self.calls += 1
            if self.calls > 1:
                self.signal = signal.SIGTERM
            return self.signal is not None

    monkeypatch.setattr(preemption, "StopRequest", SignalledInTheFirstChunk)
    result = trainer.train(tiny_config(num_steps=10), str(tmp_path))  # one chunk: the last
    assert result.step == 10 and result.stopped_by is None  # complete: exit 0, nothing to rerun
    result = trainer.train(tiny_config(num_steps=20), str(tmp_path / "two"))  # two chunks: stops after the first
    assert result.step == 10 and result.stopped_by == "SIGTERM"


def test_a_stop_before_training_saves_nothing_and_frees_the_workdir_for_another_config(tmp_path, capsys):
    stop = StopRequest()
    stop.signal = signal.SIGINT  # as if Ctrl-C came during initialisation or compilation
    result = trainer.train(tiny_config(num_steps=20), str(tmp_path), stop=stop)
    assert (result.step, result.stopped_by) == (0, "SIGINT") and not os.listdir(tmp_path / "checkpoints")
    assert "SIGINT: stopped at step 0 before training" in capsys.readouterr().err
    # Nothing was saved, so nothing is lost by another config: it starts over, and says so.
    result = trainer.train(tiny_config(num_steps=10, **{"model.d_model": 32}), str(tmp_path))
    assert result.step == 10 and "saved no checkpoint; starting over with this config (model.d_model: 16 -> 32)" in capsys.readouterr().err
    with pytest.raises(trainer.RunMismatchError, match=r"model.d_model: 32 -> 16"):  # now it has a checkpoint
        trainer.train(tiny_config(num_steps=10), str(tmp_path))


def test_schedule_warmup_and_decay():
    hp = dict(lr=1.0, warmup_steps=10.0, decay_steps=110.0, end_lr_frac=0.1)
    lr = state_lib.schedule(hp)
    values = [float(lr(np.int32(t))) for t in (0, 9, 10, 60, 110, 500)]
    np.testing.assert_allclose(values, [0.1, 1.0, 1.0, 0.55, 0.1, 0.1], rtol=1e-5)


def test_train_writes_logs_and_evaluates(tmp_path):
    config = tiny_config(eval_every=10)
    result = trainer.train(config, str(tmp_path))
    assert result.step == 20 and [s for s, _ in result.evals] == [10, 20]
    records = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    kinds = [(r["kind"], r["step"]) for r in records]
    assert kinds == [("train", 10), ("eval", 10), ("train", 20), ("eval", 20)]
    assert len(records[0]["loss"]) == 2 and records[0]["seed_steps_per_sec"] > 0
    walls = [r["wall_s"] for r in records]
    assert 0 < walls[0] and walls == sorted(walls) and walls[-1] <= result.wall_time
    assert set(records[1]["per_case"][0]) == set(fmt.CASE_NAMES)
    assert any(n.startswith("events") for n in os.listdir(tmp_path / "tensorboard"))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20"]
    assert result.resumed_from is None
    # Restarting a finished run trains nothing more and keeps the result.
    log = (tmp_path / "metrics.jsonl").read_text()
    again = trainer.train(config, str(tmp_path))
    assert again.resumed_from == 20 and again.step == 20 and (tmp_path / "metrics.jsonl").read_text() == log
    assert _leaves_equal(jax.tree.map(np.asarray, again.state.params), jax.tree.map(np.asarray, result.state.params))


@pytest.mark.parametrize(
    "steps_per_call, match",
    [
        (10, r"non-finite loss \S+ at training step 1 for seed index 1 "),  # the next step's loss shows it
        (1, r"non-finite parameters after training step 0 for seed index 1 "),  # a one-step chunk: only the parameters do
    ],
)
def test_divergence_stops_naming_the_seed_and_step_and_saves_nothing(tmp_path, steps_per_call, match):
    # lr = inf for seed 1: its first update makes its parameters infinite; its first loss is finite.
    config = tiny_config(num_seeds=2, num_steps=40, steps_per_call=steps_per_call, checkpoint_every=steps_per_call)
    members = state_lib.members_of(config)
    bad = dict(members[1].optim, lr=float("inf"))
    members[1] = state_lib.Member(members[1].seed, members[1].index, tuple(sorted(bad.items())))
    with pytest.raises(trainer.TrainingDivergedError, match=match + r".*no checkpoint was saved"):
        trainer.train(config, str(tmp_path), members=members)
    assert not os.listdir(tmp_path / "checkpoints")


def test_nan_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = tiny_config(num_seeds=2, num_steps=30)
    trainer.train(tiny_config(num_seeds=2, num_steps=10), str(tmp_path))  # a good checkpoint at 10
    real = step_lib.to_host

    def poisoned(tree):  # seed 0's loss turns NaN in the chunk after step 10
        out = {k: v.copy() for k, v in real(tree).items()}
        out["loss"][0, 3] = np.nan
        return out

    monkeypatch.setattr(trainer, "to_host", poisoned)
    with pytest.raises(trainer.TrainingDivergedError, match=r"at training step 13 for seed index 0 .*last good checkpoint is step 10"):
        trainer.train(config, str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10"]


def test_decode_stops_at_eos_and_scores():
    config = tiny_config()
    model_cfg, problem_cfg = config_lib.model_config(config), config_lib.problem_config(config)
    problems = evaluate_lib.fresh_problems(jax.random.PRNGKey(1), problem_cfg, 16)
    c = problems.context_len
    # Perfect predictions score 1; a wrong first token is classified by the oracle.
    perfect = evaluate_lib.score(problems.tokens, problems)
    assert perfect["exact"] == 1.0 and perfect["first_token"] == 1.0 and perfect["errors"] == {}
    assert sum(perfect["case_count"].values()) == 16
    wrong = problems.tokens.copy()
    wrong[0, c] = next(t for t in range(fmt.NUM_LETTERS) if t not in problems.tokens[0, :c])  # a letter of no chain
    scored = evaluate_lib.score(wrong, problems)
    assert scored["exact"] == 15 / 16 and scored["errors"] == {"wrong_first_token": 1}
    # Greedy decoding keeps the context; after the first EOS only PAD follows.
    from logic_jax.models import gpt

    params = jax.vmap(lambda k: gpt.init_params(k, model_cfg))(jax.random.split(jax.random.PRNGKey(0), 2))
    decode = jax.jit(jax.vmap(evaluate_lib.make_decode(model_cfg, c), in_axes=(0, None)))
    out = np.asarray(decode(params, problems.tokens))
    np.testing.assert_array_equal(out[:, :, :c], np.broadcast_to(problems.tokens[:, :c], out[:, :, :c].shape))
    # Decoding follows the model: every generated token, up to the first EOS, is the argmax of a
    # forward over the decoded row (causal, so what follows does not matter); then only PAD.
    forward = gpt.make_forward(model_cfg)
    stopped = 0
    for member in range(2):
        logits, _ = forward(jax.tree.map(lambda x: x[member], params), out[member])
        predicted = np.asarray(logits).argmax(-1)
        for row, pred in zip(out[member], predicted):
            answer = list(row[c:])
            end = answer.index(fmt.EOS) + 1 if fmt.EOS in answer else len(answer)
            np.testing.assert_array_equal(row[c : c + end], pred[c - 1 : c - 1 + end])
            assert all(t == fmt.PAD for t in answer[end:])
            stopped += fmt.EOS in answer
    assert stopped > 0  # at least one row reached EOS (12 of 32 with these seeds)


# --- Bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(**{"model.d_model": 15, "model.n_heads": 2}), "d_model"),
        (dict(num_seeds=0), "num_seeds"),
        (dict(**{"problem.depth": 1}), "depth"),
        (dict(**{"optim.b2": 1.5}), "optim.b2"),
        (dict(**{"optim.clip_norm": 0.0}), "optim.clip_norm': must be > 0"),  # would zero every gradient
        (dict(**{"optim.eps": 0.0}), "optim.eps': must be > 0"),  # 0/0 where a gradient is zero
        (dict(**{"optim.lr": float("nan")}), "optim.lr': must be a finite number"),
        (dict(seed=-1), "'seed': must be an integer >= 0"),  # PRNGKey(-1) is PRNGKey(2**32 - 1)
        (dict(seed=2**32), "would repeat seed 0"),
        (dict(eval_size=10**8), "'eval_size': must be at most 10,000,000"),  # sampled at once, kept in memory
    ],
)
def test_bad_values_name_the_key(tmp_path, overrides, match):
    with pytest.raises(config_lib.ConfigError, match=match):
        trainer.train(tiny_config(**overrides), str(tmp_path))


def test_unknown_key(tmp_path):
    config = tiny_config()
    config.unlock() if hasattr(config, "unlock") else None
    config.lerning_rate = 0.1
    with pytest.raises(config_lib.ConfigError, match="lerning_rate"):
        trainer.train(config, str(tmp_path))


def test_seeds_not_divisible_by_devices(tmp_path):
    with pytest.raises(step_lib.MeshError, match=r"num_seeds=3 .* device count 8"):
        trainer.train(tiny_config(num_seeds=3, num_devices=0), str(tmp_path))


def test_a_multi_process_mesh_takes_the_same_number_of_devices_from_every_process(monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(step_lib.MeshError, match=r"num_devices=3 is not a multiple of the process count 2"):
        step_lib.make_mesh(6, 3)


def test_a_workdir_named_checkpoints_is_refused(tmp_path):
    from logic_jax.train.files import WorkdirKindError

    with pytest.raises(WorkdirKindError, match=r"'checkpoints' is the name of a run's checkpoint folder"):
        trainer.train(tiny_config(), str(tmp_path / "run" / "checkpoints"))
    assert not (tmp_path / "run").exists()


def test_a_workdir_of_another_kind_is_refused_before_anything_is_written(tmp_path):
    import ml_collections

    from logic_jax.train import sweep
    from logic_jax.train.files import WorkdirKindError

    base = tmp_path / "run"
    (base / "checkpoints" / "10").mkdir(parents=True)
    (base / "run.json").write_text("{}")
    with pytest.raises(WorkdirKindError, match="inside the checkpoint folder of the run in"):
        trainer.train(tiny_config(), str(base / "checkpoints" / "10" / "nested"))
    assert not (base / "checkpoints" / "10" / "nested").exists()
    root = tmp_path / "sweep"
    root.mkdir()
    (root / "sweep.json").write_text("{}")
    with pytest.raises(WorkdirKindError, match=r"is a sweep's root \(it holds sweep.json\)"):
        trainer.train(tiny_config(), str(root))
    config = tiny_config()
    config.sweep = ml_collections.ConfigDict(dict(optim=dict(lr=(1e-3, 3e-3))))
    with pytest.raises(WorkdirKindError, match=r"holds a training run \(run.json\), not a sweep"):
        sweep.run_sweep(config, str(base))
    assert sorted(os.listdir(base)) == ["checkpoints", "run.json"]
    (tmp_path / "ok" / "checkpoints").mkdir(parents=True)  # a folder named checkpoints that holds runs is fine
    trainer.train(tiny_config(num_steps=0), str(tmp_path / "ok" / "checkpoints" / "mine"))


@pytest.mark.parametrize("text", ["{bad", "[1]", "{}"])
def test_a_damaged_run_json_is_named(tmp_path, text):
    from logic_jax.train.files import DamagedFileError

    (tmp_path / "run.json").write_text(text)
    with pytest.raises(DamagedFileError, match=f"{tmp_path / 'run.json'}: not"):
        trainer.train(tiny_config(num_steps=0), str(tmp_path))


def test_workdir_of_another_config(tmp_path):
    trainer.train(tiny_config(num_steps=10), str(tmp_path))
    with pytest.raises(trainer.RunMismatchError, match=r"model.d_model: 16 -> 32"):
        trainer.train(tiny_config(num_steps=10, **{"model.d_model": 32}), str(tmp_path))
    with pytest.raises(trainer.RunMismatchError, match=r"optim.lr"):
        trainer.train(tiny_config(num_steps=10, **{"optim.lr": 0.5}), str(tmp_path))
    # Run-length keys may change: a longer run resumes, here with another attention kernel.
    longer = trainer.train(tiny_config(num_steps=20, eval_size=16, **{"model.attention": "fused"}), str(tmp_path))
    assert (longer.resumed_from, longer.step) == (10, 20)
    with pytest.raises(trainer.RunMismatchError, match=r"model.dtype: 'float32' -> 'bfloat16'"):
        trainer.train(tiny_config(num_steps=20, **{"model.dtype": "bfloat16"}), str(tmp_path))


def test_a_run_written_before_a_config_key_existed_resumes(tmp_path):
    # run.json of an older version lacks model.dtype, model.matmul_precision and
    # model.attention: they count as their defaults, and the run resumes.
    trainer.train(tiny_config(num_steps=10), str(tmp_path))
    path = tmp_path / "run.json"
    run = json.loads(path.read_text())
    for key in ("dtype", "matmul_precision", "attention"):
        del run["config"]["model"][key]
    path.write_text(json.dumps(run))
    resumed = trainer.train(tiny_config(num_steps=20), str(tmp_path))
    assert (resumed.resumed_from, resumed.step) == (10, 20)


def _loss_inputs(batch_size):
    """Tiny-config parameters, their forward, a sampled batch and the problem config."""
    from logic_jax.models import gpt
    from logic_jax.problem.sampler import sample

    config = tiny_config()
    model_cfg, problem_cfg = config_lib.model_config(config), config_lib.problem_config(config)
    params = gpt.init_params(jax.random.PRNGKey(0), model_cfg)
    return params, gpt.make_forward(model_cfg), sample(jax.random.PRNGKey(1), problem_cfg, batch_size), problem_cfg


def test_first_token_weight_adds_only_the_first_answer_tokens_term():
    params, forward, batch, _ = _loss_inputs(16)
    base, acc = step_lib.loss_fn(params, batch.tokens, batch.answer_mask, forward)
    weighted, acc3 = step_lib.loss_fn(params, batch.tokens, batch.answer_mask, forward, first_token_weight=3.0)
    # The first answer token's cross-entropy, computed apart: the logits at ANSWER.
    logits, _ = forward(params, batch.tokens[:, :-1])
    logp = jax.nn.log_softmax(logits[np.arange(16), batch.answer_pos], axis=-1)
    first_ce = -logp[np.arange(16), batch.first_answer].sum() / batch.answer_mask[:, 1:].sum()
    np.testing.assert_allclose(float(weighted), float(base) + 2.0 * float(first_ce), rtol=1e-5)
    assert float(acc3) == float(acc)


def test_context_weight_adds_the_context_tokens_cross_entropy():
    import optax

    params, forward, batch, problem_cfg = _loss_inputs(8)
    first = fmt.answer_pos(problem_cfg.depth)
    trainer_loss, trainer_acc = step_lib.loss_fn(params, batch.tokens, batch.answer_mask, forward, logits_from=first)
    loss2, acc2 = step_lib.loss_fn(params, batch.tokens, batch.answer_mask, forward, logits_from=first, context_weight=2.0)
    assert acc2 == trainer_acc  # the accuracy stays the answer tokens'
    # By hand: the context's tokens 1..ANSWER, predicted from the positions before them.
    logits, _ = forward(params, batch.tokens[:, :-1])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :first], batch.tokens[:, 1 : first + 1])
    n_answer = np.asarray(batch.answer_mask).sum()
    np.testing.assert_allclose(loss2 - trainer_loss, 2.0 * ce.sum() / n_answer, rtol=1e-5)
    assert int(batch.tokens[0, first]) == fmt.ANSWER  # the context's last token, the first answer prediction's input


def test_the_step_computes_logits_from_the_answer_token_on_with_the_full_forwards_loss():
    """The trainer's update asks the model for logits from the ANSWER token on (nothing earlier
    has a loss): the same loss, accuracy and gradients as the whole sequence's logits give."""
    from logic_jax.models import gpt
    from logic_jax.problem.sampler import sample

    config = tiny_config()
    model_cfg, problem_cfg = config_lib.model_config(config), config_lib.problem_config(config)
    params = gpt.init_params(jax.random.PRNGKey(0), model_cfg)
    forward = gpt.make_forward(model_cfg)
    batch = sample(jax.random.PRNGKey(1), problem_cfg, 64)
    assert int(batch.answer_pos.min()) == int(batch.answer_pos.max()) == fmt.answer_pos(problem_cfg.depth)
    grad = jax.jit(jax.value_and_grad(step_lib.loss_fn, has_aux=True), static_argnames=("forward", "logits_from"))
    (full, full_acc), full_grads = grad(params, batch.tokens, batch.answer_mask, forward=forward)
    (part, part_acc), part_grads = grad(params, batch.tokens, batch.answer_mask, forward=forward, logits_from=fmt.answer_pos(problem_cfg.depth))
    np.testing.assert_allclose(float(part), float(full), rtol=1e-6)
    assert float(part_acc) == float(full_acc)
    for g, r in zip(jax.tree.leaves(part_grads), jax.tree.leaves(full_grads)):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-7)
    # And the trainer's step is that update.
    keys, hparams = state_lib.stack_members(state_lib.members_of(config_lib.to_dict(config))[:1])
    state = state_lib.init_state(keys[0], {k: v[0] for k, v in hparams.items()}, model_cfg)
    update = step_lib.make_update(model_cfg, problem_cfg)
    _, (loss, _) = jax.jit(update)(state, batch.tokens, batch.answer_mask)
    np.testing.assert_allclose(float(loss), float(step_lib.loss_fn(state.params, batch.tokens, batch.answer_mask, forward)[0]), rtol=1e-6)
    answer_positions = problem_cfg.seq_len - 1 - fmt.answer_pos(problem_cfg.depth)
    jaxpr = str(jax.make_jaxpr(update)(state, batch.tokens, batch.answer_mask))
    assert f"f32[64,{answer_positions},{fmt.VOCAB_SIZE}]" in jaxpr and f"f32[64,{problem_cfg.seq_len - 1},{fmt.VOCAB_SIZE}]" not in jaxpr
