"""Backends: who executes a plan. ``local`` drives io_uring; ``threads`` is the fallback."""
