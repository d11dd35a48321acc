r"""Where the training step's device time goes: one profiler trace of the compiled chunk, summed.

    python bench/profile_step.py                                          # configs/small.py, on the GPU
    python bench/profile_step.py --trace_out=/tmp/trace                   # also keep the Perfetto trace
    python bench/profile_step.py --config=configs/tiny_cpu.py --config.num_seeds=2 \
        --config.batch_size=16 --steps=3 --repeats=1                      # a CPU smoke run

Builds the trainer's program as bench/train_mfu.py does, compiles and times ``program.chunk``
(``--steps`` steps under ``lax.scan``) outside the profiler, then runs it ``--repeats`` times
inside ``jax.profiler.trace`` and reads the Perfetto JSON it writes (no TensorBoard needed).
Complete events are grouped by name, separately for the device streams (GPU kernels, memcpys,
memsets) and the host threads; times are exclusive (an event's time minus that of events nested
in it on the same thread) and divided by repeats x steps, so they are per training step.
On the CPU there is no device in the trace: the XLA ops (host events that carry an ``hlo_op``)
stand in for the kernels, and ``reported`` says which group the headline figures come from.
Prints one JSON object.
"""

import collections
import glob
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from logic_jax.train import config as config_lib  # noqa: E402
from logic_jax.train import state as state_lib  # noqa: E402
from logic_jax.train import step as step_lib  # noqa: E402

F = flags.FLAGS


def define_flags():
    """Called only when run as a script, so the tests can import summarize() without the flags."""
    config_flags.DEFINE_config_file("config", os.path.join(REPO, "configs", "small.py"), "The run to profile.")
    flags.DEFINE_integer("steps", 20, "Steps per compiled call.")
    flags.DEFINE_integer("repeats", 2, "Calls timed, and calls traced.")
    flags.DEFINE_integer("top", 30, "Names listed per group.")
    flags.DEFINE_string("out", None, "Also write the JSON here.")
    flags.DEFINE_string("trace_out", None, "Copy perfetto_trace.json.gz into this directory (it may be big).")


# Kernel (or XLA op) name -> category, first match wins; matched case-insensitively against the
# event name plus its hlo_op arg. Matmuls first, as a gemm fusion is a matmul, not a fusion:
# cuBLAS kernels are named sm90_xmma_gemm_*, nvjet_*, cutlass*, ampere_sgemm_*; XLA's Triton gemms
# gemm_fusion_dot_*; XLA:CPU's dot.N (its ynn_fusion.N may or may not hold a dot: it counts as a
# fusion). Then memset and copy/transpose (memcpy, copy.N, *transpose*, so loop_transpose_fusion is a
# transpose), then the remaining XLA fusions (loop_*/input_* fusions, reductions, wrapped_* ops).
CATEGORIES = (
    ("matmul", r"gemm|matmul|xmma|cutlass|nvjet|cublas|cudnn|convolution|(^|[^a-z])dot([^a-z]|$)"),
    ("memset", r"memset"),
    ("copy_transpose", r"memcpy|copy|transpose"),
    ("fusion", r"fusion|reduc|wrapped_|^loop_|^input_|triton"),
)
OTHER = "other"


def category(name: str) -> str:
    for cat, pattern in CATEGORIES:
        if re.search(pattern, name, re.IGNORECASE):
            return cat
    return OTHER


def base_name(name: str) -> str:
    """The name without XLA's instance suffixes: dot.653 -> dot, loop_add_fusion_2 -> loop_add_fusion."""
    return re.sub(r"([._]\d+)+$", "", name)


def _names(events, kind):
    """{pid or (pid, tid): name} from the metadata events ("ph": "M") process_name / thread_name."""
    key = (lambda e: e["pid"]) if kind == "process_name" else (lambda e: (e["pid"], e.get("tid")))
    return {key(e): e.get("args", {}).get("name", "") for e in events if e.get("ph") == "M" and e.get("name") == kind}


def _self_times(events):
    """Exclusive durations: each event's dur minus the parts covered by events nested in it on its thread."""
    by_thread = collections.defaultdict(list)
    for i, e in enumerate(events):
        by_thread[(e["pid"], e.get("tid"))].append(i)
    self_us = [float(e["dur"]) for e in events]
    for idx in by_thread.values():
        idx.sort(key=lambda i: (events[i]["ts"], -events[i]["dur"]))  # a parent before its children
        stack = []  # (end, index) of the open enclosing events
        for i in idx:
            ts, end = events[i]["ts"], events[i]["ts"] + events[i]["dur"]
            while stack and stack[-1][0] <= ts:
                stack.pop()
            if stack:  # only the direct parent loses the child's time
                parent_end, parent = stack[-1]
                self_us[parent] -= min(end, parent_end) - ts
            stack.append((end, i))
    return [max(t, 0.0) for t in self_us]


def _union_us(events):
    """Time covered by at least one event (the streams may overlap)."""
    total, cur_start, cur_end = 0.0, None, None
    for ts, end in sorted((e["ts"], e["ts"] + e["dur"]) for e in events):
        if cur_end is None or ts > cur_end:
            total += 0.0 if cur_end is None else cur_end - cur_start
            cur_start, cur_end = ts, end
        else:
            cur_end = max(cur_end, end)
    return total + (0.0 if cur_end is None else cur_end - cur_start)


def _group(events, per, top, classify):
    """Per-step totals of one group of events, by name (and by category if ``classify``)."""
    self_us = _self_times(events)
    total = sum(self_us)
    by_name = collections.defaultdict(lambda: [0.0, 0])
    by_base = collections.defaultdict(lambda: [0.0, 0])
    by_cat = collections.defaultdict(float)
    for e, t in zip(events, self_us):
        for table, key in ((by_name, e["name"]), (by_base, base_name(e["name"]))):
            table[key][0] += t
            table[key][1] += 1
        if classify:
            by_cat[category(f'{e["name"]} {e.get("args", {}).get("hlo_op", "")}')] += t
    share = lambda t: t / total if total > 0 else 0.0  # noqa: E731
    rows = lambda table: [  # noqa: E731
        dict(name=n, ms_per_step=t / 1e3 / per, count_per_step=c / per, share=share(t))
        for n, (t, c) in sorted(table.items(), key=lambda kv: -kv[1][0])[:top]
    ]
    out = dict(
        ms_per_step=total / 1e3 / per,
        count_per_step=len(events) / per,
        distinct_names=len(by_name),
        top=rows(by_name),
        top_by_base_name=rows(by_base),  # instances of one kind of op or kernel summed
    )
    if classify:
        cats = [c for c, _ in CATEGORIES] + [OTHER]
        out["categories"] = {c: dict(ms_per_step=by_cat[c] / 1e3 / per, share=share(by_cat[c])) for c in cats}
    return out


# Timelines that xprof derives from the kernels (on TPUs and in some exports); summing them
# with the kernels would count the same time twice.
DERIVED_LINES = ("steps", "xla modules", "xla ops", "async xla ops", "tensorflow ops", "tensorflow name scope",
                 "framework ops", "framework name scope", "source code", "launch stats", "xla tracemes")


def summarize(trace: dict, per: float, top: int) -> dict:
    """Per-step summary of a Chrome/Perfetto trace dict (``{"traceEvents": [...]}``).

    Device processes are those whose process_name contains "/device:" (the profiler names GPU
    planes "/device:GPU:N"; the host is "/host:CPU"). A device's kernels are on its threads whose
    name contains "stream" (CUPTI's "Stream #N(...)"); a device without such threads gives all of
    them but the DERIVED_LINES. ``per`` divides every time and count (repeats x steps); ``top``
    names are listed per group.
    """
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    procs, threads = _names(events, "process_name"), _names(events, "thread_name")
    thread_of = lambda e: threads.get((e["pid"], e.get("tid")), str(e.get("tid"))).lower()  # noqa: E731
    label = lambda e: f'{procs.get(e["pid"], e["pid"])} / {threads.get((e["pid"], e.get("tid")), e.get("tid"))}'  # noqa: E731
    complete = [e for e in events if e.get("ph") == "X" and "dur" in e and "name" in e]
    on_device = [e for e in complete if "/device:" in procs.get(e["pid"], "")]
    host = [e for e in complete if "/device:" not in procs.get(e["pid"], "")]
    has_streams = {e["pid"] for e in on_device if "stream" in thread_of(e)}
    is_kernel = lambda e: "stream" in thread_of(e) if e["pid"] in has_streams else thread_of(e) not in DERIVED_LINES  # noqa: E731
    device = [e for e in on_device if is_kernel(e)]
    xla_ops = [e for e in host if "hlo_op" in e.get("args", {})]

    busy_threads = collections.defaultdict(float)  # each device stream, each host thread running XLA ops
    for e in device + xla_ops:
        busy_threads[label(e)] += e["dur"]
    pids = {e["pid"] for e in device}
    busy_us = sum(_union_us([e for e in device if e["pid"] == p]) for p in pids) / max(len(pids), 1)
    return dict(
        reported="device" if device else "host_xla_ops",
        device_busy_ms_per_step=busy_us / 1e3 / per,  # per device, its streams' kernels merged
        device=_group(device, per, top, classify=True),
        host_xla_ops=_group(xla_ops, per, top, classify=True),
        host=_group(host, per, top, classify=False),
        threads={k: v / 1e3 / per for k, v in sorted(busy_threads.items(), key=lambda kv: -kv[1])},
        dropped_device_threads=sorted({label(e) for e in on_device if not is_kernel(e)}),
    )


def find_trace(log_dir: str) -> str:
    """The Perfetto trace the profiler wrote (or, failing that, its trace.json.gz: the same events)."""
    for pattern in ("perfetto_trace.json.gz", "*.trace.json.gz"):
        found = sorted(glob.glob(os.path.join(log_dir, "**", pattern), recursive=True), key=os.path.getmtime)
        if found:
            return found[-1]
    raise FileNotFoundError(f"no trace JSON under {log_dir}: {sorted(glob.glob(os.path.join(log_dir, '**'), recursive=True))}")


def main(argv):
    del argv
    config = F.config
    model_cfg, problem_cfg = config_lib.model_config(config), config_lib.problem_config(config)
    steps, repeats = F.steps, F.repeats
    mesh = step_lib.make_mesh(config.num_seeds, config.num_devices)
    program = step_lib.make_train(model_cfg, problem_cfg, config.batch_size, mesh)
    keys, hp = state_lib.stack_members(state_lib.members_of(config_lib.to_dict(config)))
    state = program.init(keys, hp)
    run = lambda: jax.block_until_ready(program.chunk(state, steps))  # noqa: E731 - the state is not donated

    run()  # compile + warm up
    wall = []
    for _ in range(repeats):  # timed outside the profiler, which slows the host
        t = time.perf_counter()
        run()
        wall.append(time.perf_counter() - t)

    extra = {}
    if hasattr(jax.profiler, "ProfileOptions"):  # not in every jax version
        extra["profiler_options"] = jax.profiler.ProfileOptions()
        extra["profiler_options"].python_tracer_level = 0  # one Python call per chunk: its frames only add overhead
    with tempfile.TemporaryDirectory() as log_dir:
        with jax.profiler.trace(log_dir, create_perfetto_trace=True, **extra):
            t = time.perf_counter()
            for _ in range(repeats):
                run()
            traced_s = time.perf_counter() - t
        path = find_trace(log_dir)
        with gzip.open(path, "rt") as f:
            trace = json.load(f)
        kept = None
        if F.trace_out:
            os.makedirs(F.trace_out, exist_ok=True)
            kept = shutil.copy(path, os.path.join(F.trace_out, os.path.basename(path)))

    per = repeats * steps
    s = summarize(trace, per, F.top)
    reported = s[s["reported"]]
    step_ms = 1e3 * min(wall) / steps
    out = dict(
        device=jax.devices()[0].device_kind,
        devices=jax.device_count(),
        platform=jax.default_backend(),
        jax=jax.__version__,
        model=config_lib.to_dict(config)["model"],
        seeds=config.num_seeds,
        batch_size=config.batch_size,
        steps_per_call=steps,
        repeats=repeats,
        step_ms=step_ms,  # best wall time, outside the trace
        traced_step_ms=1e3 * traced_s / per,  # wall time under the profiler
        device_busy_ms_per_step=s["device_busy_ms_per_step"],
        device_busy_share=s["device_busy_ms_per_step"] / step_ms,
        reported=s["reported"],
        reported_note=("GPU/TPU kernels, memcpys and memsets on the device streams" if s["reported"] == "device"
                       else "no device in the trace: XLA ops run on host threads (events with an hlo_op)"),
        reported_ms_per_step=reported["ms_per_step"],
        categories=reported["categories"],
        top=reported["top"],
        top_by_base_name=reported["top_by_base_name"],
        groups={k: dict(ms_per_step=s[k]["ms_per_step"], count_per_step=s[k]["count_per_step"], distinct_names=s[k]["distinct_names"])
                for k in ("device", "host_xla_ops", "host")},
        threads=s["threads"],
        dropped_device_threads=s["dropped_device_threads"],
        host_top=s["host"]["top"][:10],
        trace_file=kept,
    )
    from bench.report import emit

    emit(out, F.out)


if __name__ == "__main__":
    define_flags()
    app.run(main)
