"""Feed-dict sources: calibration data produced by Python code instead of read from files.

``--data-loader-script FILE.py[:func]`` follows Polygraphy's convention
(``polygraphy convert --int8 --data-loader-script``): the file defines a function,
``load_data`` by default, taking no arguments and returning an iterable (usually a
generator) of feed dicts ``{input name: array}``, each one batch with the batch on
axis 0 (an array one rank short is taken as a single sample). The arrays are the
model's inputs as they are: no preprocessing spec applies.

In Python, pass a :class:`FeedDictSource`, or wrap your own generator function with
``FeedDictSource(load_data)``, as ``data=`` to :func:`int8calib.calibrate`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from ..errors import Int8CalibError

DEFAULT_FUNCTION = "load_data"


class FeedDictSource:
    """Calls ``load`` for an iterable of feed dicts; ``origin`` names it in error messages."""

    def __init__(self, load: Callable[[], Iterable[Mapping]], origin: str | None = None, fingerprint: str | None = None):
        if not callable(load):
            raise Int8CalibError(f"a feed-dict source needs a function returning feed dicts, got {type(load).__name__}")
        self.load = load
        self.origin = origin or getattr(load, "__qualname__", repr(load))
        self._fingerprint = fingerprint

    def fingerprint(self) -> str:
        """Identifies the data without running the loader: the script's text and function name."""
        if self._fingerprint is None:
            try:
                text = inspect.getsource(self.load)
            except (OSError, TypeError):
                text = self.origin
            self._fingerprint = hashlib.sha256(text.encode()).hexdigest()
        return self._fingerprint

    def __iter__(self) -> Iterator[tuple[int, Mapping]]:
        """(item number from 1, feed dict), checking that each item is a mapping."""
        try:
            items = self.load()
            iterator = iter(items)
        except Int8CalibError:
            raise
        except TypeError as exc:
            raise Int8CalibError(f"{self.origin}: must return an iterable of feed dicts ({exc})") from None
        except Exception as exc:
            raise Int8CalibError(f"{self.origin}: raised {_describe(exc)}") from None
        number = 0
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except Int8CalibError:
                raise
            except Exception as exc:
                raise Int8CalibError(f"{self.origin}: raised {_describe(exc)} while producing item {number + 1}") from None
            number += 1
            if not isinstance(item, Mapping):
                raise Int8CalibError(
                    f"{self.origin}: item {number} is a {type(item).__name__}, expected a feed dict {{input name: array}}"
                )
            yield number, item

    def __repr__(self) -> str:
        return f"FeedDictSource({self.origin})"


def split_rows(source: FeedDictSource, batch_axes: Mapping[str, "int | None"], every: int) -> tuple[FeedDictSource, FeedDictSource]:
    """(kept, held out): the rows of ``source``'s feed dicts numbered i (over the whole stream, from 0)
    with i % every != every - 1, and the others, as the file samples are split for held-out
    measurements. ``batch_axes`` gives each input's batch axis (None: fed as it is, to both).
    A feed dict whose inputs have no batch axis is one sample."""
    import numpy as np

    def part(held: bool) -> Callable[[], Iterator[dict]]:
        def load() -> Iterator[dict]:
            start = 0
            for _, feed in source:
                arrays = {k: np.asarray(v) for k, v in feed.items()}
                axes = {k: batch_axes.get(k) for k in arrays if batch_axes.get(k) is not None and arrays[k].ndim > batch_axes[k]}
                sizes = {arrays[k].shape[a] for k, a in axes.items()}
                if len(sizes) > 1:  # malformed: passed on whole for the loader to report in its words
                    if not held:
                        yield feed
                    continue
                rows = sizes.pop() if sizes else 1
                index = np.arange(start, start + rows)
                start += rows
                pick = np.flatnonzero((index % every == every - 1) == held)
                if not len(pick):
                    continue
                if not axes:
                    yield feed
                    continue
                yield {k: np.take(v, pick, axis=axes[k]) if k in axes else v for k, v in arrays.items()}
        return load

    tag = f"every {every}"
    return (FeedDictSource(part(False), source.origin, f"{source.fingerprint()}:kept:{tag}"),
            FeedDictSource(part(True), source.origin, f"{source.fingerprint()}:held:{tag}"))


def _describe(exc: BaseException) -> str:
    """``ValueError: message (script.py:12)``: the exception and the deepest frame in user code."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    message = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}{': ' + message if message else ''}{where}"


def parse_script_spec(spec: str) -> tuple[Path, str]:
    """``"loader.py:make_data"`` -> (Path("loader.py"), "make_data"); the function defaults to load_data.

    The split is on the last colon after the ``.py``, so Windows drive letters survive.
    """
    path_text, sep, func = spec.rpartition(":")
    if not sep or not func.isidentifier() or not path_text:
        path_text, func = spec, DEFAULT_FUNCTION
    return Path(path_text).expanduser(), func


def load_data_loader_script(spec: str) -> FeedDictSource:
    """Import ``FILE.py`` and return its feed-dict function as a :class:`FeedDictSource`."""
    path, func_name = parse_script_spec(spec)
    if not path.is_file():
        raise Int8CalibError(f"{path}: data loader script not found")
    text = path.read_bytes()
    module_name = f"_int8calib_data_loader_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise Int8CalibError(f"{path}: cannot import as a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # dataclasses and pickling inside the script look their module up
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise Int8CalibError(f"{path}:{exc.lineno}: syntax error in data loader script ({exc.msg})") from None
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise Int8CalibError(f"{path}: data loader script raised {_describe(exc)} on import") from None
    func = getattr(module, func_name, None)
    if func is None:
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module_name)
        raise Int8CalibError(
            f"{path}: no function '{func_name}' (defines {', '.join(names) or 'no functions'}); use FILE.py:FUNCTION"
        )
    if not callable(func):
        raise Int8CalibError(f"{path}: '{func_name}' is a {type(func).__name__}, not a function")
    fingerprint = hashlib.sha256(text + b"\0" + func_name.encode()).hexdigest()
    return FeedDictSource(func, f"{path}:{func_name}", fingerprint)
