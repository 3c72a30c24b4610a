"""The GPU readiness check (benchmarks/gpu_check.py) runs its code paths on CPU: every part
answers, the CUDA-only ones say they were skipped and why, every trainer x precision path it can
run on CPU takes finite, weight-moving steps."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_its_code_paths_on_cpu(tmp_path):
    out = tmp_path / "check.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    result = json.loads(out.read_text())
    parts = result["parts"]
    assert list(parts) == ["env", "trainers", "compile", "resume", "ddp", "apply", "eval", "mfu"] and result["ok"]
    rows = parts["trainers"]["rows"]
    assert {x["trainer"] for x in rows} == {"cyclegan", "cut", "cyclegan_sem", "deeplabv3plus_r101", "deeplabv2_r101",
                                            "online_mic", "daformer_mitb5"}
    assert {x["variant"] for x in rows} == {"fp32", "bf16", "bf16-cl"}  # fp16 needs CUDA: skipped, with the reason
    assert all(x["losses_finite"] and x["weights_moved"] > 0 for x in rows)
    assert len(parts["trainers"]["skipped"]) == 7 and all("CUDA-only" in s for s in parts["trainers"]["skipped"])
    assert "CUDA only" in parts["compile"]["skipped"]
    assert parts["ddp"]["backend"] == "gloo" and parts["ddp"]["segment"]["rc"] == 0
    assert parts["resume"]["relative_loss_difference"] == 0.0  # on CPU the resume is exact
    assert parts["apply"]["frames"] == 2 and parts["eval"]["frames"] == 2
    assert all(x["tflop_per_step"] > 0 for x in parts["mfu"]["rows"])
    assert "all" in r.stdout and "skipped" in r.stdout


def test_the_parts_caps_fit_a_device_loan():
    # A lent GPU has ~15 minutes with its start-up: the parts' caps on CUDA add up to 8 minutes at most.
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    assert sum(gpu_check.LIMITS.values()) <= 480 and set(gpu_check.LIMITS) == set(gpu_check.QUICK_LIMITS)
