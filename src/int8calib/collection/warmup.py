"""Warm-up: load the histogram kernel and what the methods compile while the model loads."""

from __future__ import annotations

from typing import Sequence


def warm_up_in_background(methods: Sequence[str] = (), histograms: bool = True) -> None:
    """Start loading the histogram kernel (unless ``histograms`` is False: worker processes
    histogram, their parent does not), then what ``methods`` compile (mse's numba loop), in
    a thread: it overlaps loading the model and collecting instead of delaying them."""
    import threading

    def load() -> None:
        try:
            from ..methods import get

            if histograms:
                from ..stats import kernels

                kernels.warm_up()
            for name in methods:
                prepare = get(name).prepare
                if prepare is not None:
                    prepare()
        except Exception:  # the first real use reports any problem
            pass

    threading.Thread(target=load, name="int8calib-warm-up", daemon=True).start()
