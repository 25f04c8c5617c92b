"""Run tracking: the run directory and what goes in it."""

from tunewise.track.rundir import RunDir, create_run_dir

__all__ = ["RunDir", "create_run_dir"]
