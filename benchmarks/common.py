"""Transitional: the benchmarks' library is now harness.py. This re-export keeps serve.py running until it moves
to the harness; then this file goes."""

from harness import CLASSES, RESULTS, STUB_NOTE, cpu_name, seglab_model, smp_model, write_checkpoint

__all__ = ["CLASSES", "RESULTS", "STUB_NOTE", "cpu_name", "seglab_model", "smp_model", "write_checkpoint"]
