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


def test_ci_runs_exactly_the_readme_setup_commands():
    """.ci/run installs and tests with the two commands of README.md's "Set up a fresh machine" block."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = re.search(r"## Set up a fresh machine\s+```bash\n(.*?)```", readme, re.S)
    assert block, "README.md has no 'Set up a fresh machine' bash block"
    readme_cmds = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    setup = 'apt-get update && apt-get install -y chromium && pip install torch==2.13.0 -e ".[dev]"'
    assert readme_cmds == [setup, "python3 -m pytest -q"]
    # the browser tests (tests/test_browser.py) drive the Chromium this line installs, never a downloaded one
    from test_browser import CHROMIUM, SETUP

    assert CHROMIUM == "/usr/bin/chromium" and SETUP == setup
    ci_cmds = [
        line.strip() for line in (root / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ci_cmds[-2:] == readme_cmds
    assert "set -euo pipefail" in ci_cmds  # a failing install or test run fails CI


def test_readme_quick_start_runs(golden_root, tmp_path):
    """The README's quick start, as written, with the tiny test networks in place of the real weights
    (and 2 sequences of 3 64x64 views, so that it runs on CPU)."""
    import re
    from pathlib import Path

    import torch

    import met3r_metrics
    from met3r_metrics.testing import tiny_met3r_kwargs

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"## Quick start\s+```python\n(.*?)```", readme, re.S).group(1)
    code = code.replace("(4, 8, 3, 256, 256)", "(2, 3, 3, 64, 64)").replace("from met3r_metrics import MEt3R, met3r\n", "")
    assert "(2, 3, 3, 64, 64)" in code  # the README's views line, made small
    kw = tiny_met3r_kwargs(golden_root, tmp_path)
    dust = tiny_met3r_kwargs(golden_root, tmp_path, backbone="dust3r")

    def tiny_met3r(views, variant=None, **k):
        return met3r_metrics.met3r(views, variant, **{**(dust if variant == "paper" else kw), **k})

    torch.manual_seed(0)
    exec(compile(code, "README.md quick start", "exec"), {"MEt3R": lambda **k: met3r_metrics.MEt3R(**kw, **k),
                                                          "met3r": tiny_met3r})


def test_readme_known_cameras_snippet_runs():
    """The README's known-cameras snippet, as written (no weights needed: no network runs for rmse)."""
    import re
    from pathlib import Path

    import torch

    import met3r_metrics

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "KnownGeometry.from_depth" in b)
    lines = code.rstrip().splitlines()
    assert lines[-1].startswith("met3r(")
    ns = {"torch": torch, "met3r": met3r_metrics.met3r}
    exec(compile("\n".join(lines[:-1] + ["result = " + lines[-1]]), "README.md known cameras", "exec"), ns)
    assert ns["result"].shape == (1,) and torch.isfinite(ns["result"]).all()
    assert ns["geometry"].points.shape[:2] == (1, 2)
