"""What every benchmark does last: print its JSON result and, with --out, write it to a file; and
what the benchmarks share about a config's numerics."""

import json

# matmul_precision values that put bfloat16 on the matmul inputs (the rest are float32 or TF32).
# Not "bfloat16": JAX lowers that name to Precision.DEFAULT, as "default" (TF32 on a GPU).
BF16_MATMULS = ("BF16_BF16_F32",)
# Those that forbid TF32: exact float32 matmuls, judged against the FP32 (CUDA-core) peak.
F32_MATMULS = ("float32", "highest", "F32_F32_F32")


def bf16_numerics(model_cfg) -> bool:
    """Whether a model config computes in bfloat16: its activations, or its matmuls' inputs."""
    return model_cfg.get("dtype", "float32") == "bfloat16" or model_cfg.get("matmul_precision", "default") in BF16_MATMULS


def emit(result: dict, out_path: str | None) -> None:
    text = json.dumps(result, indent=1)
    print(text)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text)
