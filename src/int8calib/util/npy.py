"""One lock for reading .npy / .npz files.

numpy parses every array header with ``ast.literal_eval``, and CPython 3.11's AST constructor keeps its
recursion depth in state that threads share: two threads parsing at once can fail with a spurious
``SystemError: AST constructor recursion depth mismatch`` (python/cpython issue 106905 and its
neighbours). It happened in this project's CI: the batch loader's prefetch thread was reading .npy
samples while the main thread resolved another tensor file. Every read of such a file in int8calib
holds this lock while numpy parses; a memory-mapped array's data is read later, outside it.
"""

from __future__ import annotations

import threading

NPY_LOCK = threading.Lock()
