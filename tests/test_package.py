import subprocess
import sys


def test_import_has_no_global_side_effects():
    # Importing must not flip TF32 or seed the RNG (DESIGN: no global side effects on import).
    code = (
        "import torch; tf = torch.backends.cuda.matmul.allow_tf32; s = torch.initial_seed();"
        "import met3r_metrics, met3r_metrics.models;"
        "assert torch.backends.cuda.matmul.allow_tf32 == tf;"
        "assert torch.initial_seed() == s;"
        "print(met3r_metrics.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0.1.0"
