"""Merging statistics files written by separate jobs (``int8calib merge``).

Parts merge only when they describe the same thing: the same model file, the same
preprocessing, the same histogram resolution and tensors, and (for ``--shard K/N``
parts) the same data set, each shard once. The merged metadata is what a single run
over all the data would have written.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import Int8CalibError
from .histogram import Statistics, merge

# Metadata every part must agree on, with the words used in the error message.
_MUST_MATCH = {"model_sha256": "model", "preprocess": "preprocessing", "data_sha256": "data set"}


def combine(parts: Sequence[Statistics], sources: Sequence[str], allow_partial: bool = False) -> Statistics:
    """Merge ``parts`` (read from ``sources``, named in errors) after checking they fit together."""
    if not parts:
        raise Int8CalibError("merge needs at least one statistics file")
    first, first_src = parts[0], sources[0]
    for part, src in zip(parts[1:], sources[1:]):
        for key, what in _MUST_MATCH.items():
            if part.meta.get(key) != first.meta.get(key):
                raise Int8CalibError(
                    f"{src}: different {what} from {first_src} ({key} {_short(part.meta.get(key))} vs "
                    f"{_short(first.meta.get(key))}); statistics of different runs cannot be merged"
                )
        if part.mantissa_bits != first.mantissa_bits:
            raise Int8CalibError(f"{src}: {part.mantissa_bits} mantissa bits, {first_src} has {first.mantissa_bits}")
        if set(part.tensors) != set(first.tensors):
            missing = sorted(set(first.tensors) ^ set(part.tensors))
            raise Int8CalibError(f"{src}: not the same tensors as {first_src} (e.g. {missing[:3]})")
    _check_shards(parts, sources, allow_partial)
    total = parts[0]
    for part in parts[1:]:
        total = merge(total, part)
    meta = {k: v for k, v in total.meta.items() if k != "shard"}
    return Statistics(total.tensors, meta)


def _check_shards(parts: Sequence[Statistics], sources: Sequence[str], allow_partial: bool) -> None:
    shards = [p.meta.get("shard") for p in parts]
    if all(s is None for s in shards):
        return
    seen: dict[int, str] = {}
    counts = set()
    for s, src in zip(shards, sources):
        if s is None:
            raise Int8CalibError(f"{src}: not a shard, but other files are (give only the --shard K/N outputs)")
        k, n = int(s[0]), int(s[1])
        counts.add(n)
        if k in seen:
            raise Int8CalibError(f"{src}: shard {k}/{n} is also in {seen[k]}; each shard may be merged once")
        seen[k] = src
    if len(counts) != 1:
        raise Int8CalibError(f"shards of different splits ({', '.join(f'/{n}' for n in sorted(counts))}) cannot be merged")
    n = counts.pop()
    missing = sorted(set(range(1, n + 1)) - set(seen))
    if missing and not allow_partial:
        raise Int8CalibError(
            f"shard(s) {', '.join(f'{k}/{n}' for k in missing)} missing; pass them too, or --allow-partial"
        )


def _short(value) -> str:
    text = str(value)
    return text[:12] + "..." if len(text) > 15 else text
