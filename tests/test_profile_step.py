"""bench/profile_step.py: its trace summary on synthetic traces (a GPU-like one with device
streams, a CPU-like one with XLA ops on host threads), and one tiny run on the CPU."""

import gzip
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench import profile_step  # noqa: E402

EPS = 1e-9


def _meta(pid, name, tid=None):
    if tid is None:
        return dict(ph="M", pid=pid, name="process_name", args=dict(name=name))
    return dict(ph="M", pid=pid, tid=tid, name="thread_name", args=dict(name=name))


def _x(pid, tid, name, ts, dur, **args):
    return dict(ph="X", pid=pid, tid=tid, name=name, ts=ts, dur=dur, args=args)


GPU, HOST = 1, 701
GPU_TRACE = dict(
    displayTimeUnit="ns",
    traceEvents=[
        _meta(GPU, "/device:GPU:0"),
        _meta(GPU, "Stream #13(Compute)", 13),
        _meta(GPU, "Stream #20(MemcpyD2D,Memset)", 20),
        _meta(GPU, "XLA Ops", 99),  # a derived line: the same time again, not counted
        _meta(HOST, "/host:CPU"),
        _meta(HOST, "python", 1),
        _meta(HOST, "tf_XLAGpuClient", 2),
        # Stream 13: 0-100 us busy, a gap, 150-170.
        _x(GPU, 13, "sm90_xmma_gemm_f32f32_tf32f32_f32_tn_n_tilesize128x128x32", 0, 60, hlo_op="cublas-gemm.1"),
        _x(GPU, 13, "nvjet_tst_128x64_64x8", 60, 2, hlo_op="custom-call.2"),
        _x(GPU, 13, "gemm_fusion_dot_3", 62, 8, hlo_op="gemm_fusion_dot.3"),
        _x(GPU, 13, "loop_add_fusion_2", 70, 20, hlo_op="loop_add_fusion.2"),
        _x(GPU, 13, "input_reduce_fusion", 90, 10, hlo_op="input_reduce_fusion"),
        _x(GPU, 13, "loop_transpose_fusion", 150, 15, hlo_op="loop_transpose_fusion"),
        _x(GPU, 13, "rng_kernel", 165, 5),
        # Stream 20: overlaps stream 13 at 95-100, alone at 100-103.
        _x(GPU, 20, "MemcpyD2D", 95, 5),
        _x(GPU, 20, "Memset", 100, 3),
        _x(GPU, 99, "dot.3", 0, 1000, hlo_op="dot.3"),
        # Host: one call (300 us of its own) around the executable's launch (200 us).
        _x(HOST, 1, "PjitFunction(run)", 0, 500),
        _x(HOST, 1, "CommonPjRtLoadedExecutable::Execute", 100, 200),
        _x(HOST, 2, "ThunkExecutor::Execute", 110, 50),
        dict(ph="C", pid=GPU, name="counter", ts=0, args=dict(v=1)),  # not a complete event
    ],
)


def test_gpu_trace_reports_the_device_streams_by_category():
    s = profile_step.summarize(GPU_TRACE, per=2.0, top=3)
    assert s["reported"] == "device"
    dev = s["device"]
    assert dev["ms_per_step"] == pytest.approx((60 + 2 + 8 + 20 + 10 + 15 + 5 + 5 + 3) / 1e3 / 2)
    assert dev["count_per_step"] == 4.5 and dev["distinct_names"] == 9
    cats = {c: v["ms_per_step"] * 2e3 for c, v in dev["categories"].items()}  # back to us per trace
    assert cats == pytest.approx(dict(matmul=70, memset=3, copy_transpose=20, fusion=30, other=5))
    assert sum(v["share"] for v in dev["categories"].values()) == pytest.approx(1.0)
    assert [r["name"] for r in dev["top"]] == ["sm90_xmma_gemm_f32f32_tf32f32_f32_tn_n_tilesize128x128x32", "loop_add_fusion_2", "loop_transpose_fusion"]
    assert dev["top"][0]["ms_per_step"] == pytest.approx(0.03) and dev["top"][0]["count_per_step"] == 0.5
    # Busy: 0-103 and 150-170 with the streams merged, per step.
    assert s["device_busy_ms_per_step"] == pytest.approx(123 / 1e3 / 2)
    assert s["dropped_device_threads"] == ["/device:GPU:0 / XLA Ops"]
    assert set(s["threads"]) == {"/device:GPU:0 / Stream #13(Compute)", "/device:GPU:0 / Stream #20(MemcpyD2D,Memset)"}
    # Host: exclusive times, so the call counts 300 us, not 500.
    host = {r["name"]: r["ms_per_step"] * 2e3 for r in s["host"]["top"]}
    assert host == pytest.approx({"PjitFunction(run)": 300, "CommonPjRtLoadedExecutable::Execute": 200, "ThunkExecutor::Execute": 50})
    assert "categories" not in s["host"] and s["host_xla_ops"]["ms_per_step"] == 0


def test_cpu_trace_reports_the_xla_ops_on_host_threads():
    trace = dict(traceEvents=[
        _meta(HOST, "/host:CPU"),
        _meta(HOST, "tf_XLAEigen/1", 3),
        _x(HOST, 3, "ThunkExecutor::Execute", 0, 100),  # no hlo_op: host overhead, not an op
        _x(HOST, 3, "dot.641", 10, 40, hlo_op="dot.641"),
        _x(HOST, 3, "dot.7", 50, 10, hlo_op="dot.7"),
        _x(HOST, 3, "while.1", 60, 30, hlo_op="while.1"),
        _x(HOST, 3, "copy_bitcast_fusion.3", 65, 20, hlo_op="copy_bitcast_fusion.3"),  # nested in the while
        _x(HOST, 3, "ynn_fusion.118", 100, 6, hlo_op="ynn_fusion.118"),
    ])
    s = profile_step.summarize(trace, per=1.0, top=10)
    assert s["reported"] == "host_xla_ops" and s["device"]["ms_per_step"] == 0 and s["device_busy_ms_per_step"] == 0
    ops = s["host_xla_ops"]
    assert ops["ms_per_step"] == pytest.approx(0.086)  # while.1 keeps 10 us of its own
    assert {r["name"]: r["ms_per_step"] * 1e3 for r in ops["top_by_base_name"]} == pytest.approx(
        {"dot": 50, "copy_bitcast_fusion": 20, "while": 10, "ynn_fusion": 6})
    cats = {c: v["ms_per_step"] * 1e3 for c, v in ops["categories"].items()}
    assert cats == pytest.approx(dict(matmul=50, memset=0, copy_transpose=20, fusion=6, other=10))


@pytest.mark.parametrize("name, base", [("dot.653", "dot"), ("loop_add_fusion_2", "loop_add_fusion"), ("fusion.1.2", "fusion"),
                                        ("nvjet_tst_128x64_64x8", "nvjet_tst_128x64_64x8"), ("MemcpyD2D", "MemcpyD2D")])
def test_base_name(name, base):
    assert profile_step.base_name(name) == base


@pytest.mark.parametrize("name, cat", [("ampere_sgemm_128x64_tn", "matmul"), ("cutlass_80_tensorop_s1688gemm", "matmul"), ("dot_add_fusion.1", "matmul"),
                                       ("convert_fusion", "fusion"), ("wrapped_reduce-window.2", "fusion"), ("Memcpy HtoD", "copy_transpose"),
                                       ("Memset", "memset"), ("redzone_checker", "other")])
def test_category(name, cat):
    assert profile_step.category(name) == cat


def test_cpu_run(tmp_path):
    out, trace_dir = tmp_path / "profile.json", tmp_path / "trace"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")  # one CPU device: not conftest's 8
    cmd = [sys.executable, "bench/profile_step.py", "--config=configs/tiny_cpu.py", "--config.num_seeds=2", "--config.batch_size=16",
           "--steps=3", "--repeats=1", "--top=10", f"--out={out}", f"--trace_out={trace_dir}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["platform"] == "cpu" and r["seeds"] == 2 and r["batch_size"] == 16 and r["model"]["d_model"] == 64
    assert r["reported"] == "host_xla_ops" and r["reported_note"]  # no device on the CPU
    assert r["step_ms"] > 0 and r["traced_step_ms"] > 0 and r["reported_ms_per_step"] > 0
    assert r["groups"]["host_xla_ops"]["count_per_step"] > 0 and r["groups"]["host"]["ms_per_step"] > 0
    for rows in (r["top"], r["top_by_base_name"]):
        times = [row["ms_per_step"] for row in rows]
        assert 0 < len(rows) <= 10 and times == sorted(times, reverse=True) and times[0] > 0
        assert sum(row["share"] for row in rows) <= 1 + EPS
    assert set(r["categories"]) == {"matmul", "memset", "copy_transpose", "fusion", "other"}
    assert sum(c["share"] for c in r["categories"].values()) == pytest.approx(1.0)
    assert r["categories"]["matmul"]["ms_per_step"] > 0 and r["categories"]["fusion"]["ms_per_step"] > 0
    with gzip.open(r["trace_file"], "rt") as f:
        assert json.load(f)["traceEvents"]
