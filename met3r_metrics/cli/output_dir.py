"""``output.dir``: created (or checked) before anything is written, so that a user's own folder is never
overwritten and a folder that cannot be made is one line naming ``output.dir``."""

from __future__ import annotations

from pathlib import Path

from met3r_metrics.io import RESULTS_MARKER, is_results_folder

__all__ = ["prepare_output_dir"]


def _preview(names: list[str], k: int = 4) -> str:
    return ", ".join(names[:k]) + (f", ... ({len(names)} in all)" if len(names) > k else "")


def prepare_output_dir(out_dir: Path, overwrite: bool) -> None:
    """Make ``out_dir`` a met3r-eval results folder (with :data:`~met3r_metrics.io.RESULTS_MARKER`).

    A new or empty folder, or one met3r-eval wrote before (resumed), is fine. A folder holding files met3r-eval
    did not write (a training run's ``config.yaml`` / ``summary.json``) is refused unless ``overwrite``, since
    met3r-eval's files of the same names would replace them.

    Raises:
        SystemExit: one line naming ``output.dir``, the expected and the received value.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SystemExit(f"met3r-eval: output.dir: expected a folder, got {str(out_dir)!r}, which is a file")
    if out_dir.is_dir() and not overwrite and not is_results_folder(out_dir):
        try:
            foreign = sorted(p.name for p in out_dir.iterdir())
        except OSError as err:
            raise SystemExit(f"met3r-eval: output.dir: expected a readable folder, got {str(out_dir)!r} "
                             f"({type(err).__name__}: {err.strerror or err})") from None
        if foreign:
            raise SystemExit(
                f"met3r-eval: output.dir: expected a new or empty folder or a met3r-eval results folder, got "
                f"{str(out_dir)!r}, which holds files met3r-eval did not write ({_preview(foreign)}): choose another "
                f"output.dir, or output.overwrite=true to write met3r-eval's files there (replacing any of the same name)"
            )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / RESULTS_MARKER).write_text("written by met3r-eval: this folder holds results, never data\n")
    except OSError as err:
        raise SystemExit(f"met3r-eval: output.dir: expected a folder that can be created and written, got "
                         f"{str(out_dir)!r} ({type(err).__name__}: {err.strerror or err})") from None
