"""`Predictor`: a batch-inference worker for whole datasets, one per process, in the shape Ray Data, Dask and Spark
call.

    predictor = swinref.Predictor("swin_t.safetensors", outputs=("embedding", "top"), threads=2)
    predictor({"image": images})        # Ray Data: read_images(...).map_batches(Predictor, fn_constructor_kwargs=...)
    predictor(["a.jpg", "b.png"])      # paths, encoded bytes, pixel arrays, or a preprocessed float batch
    -> {"image": ..., "embedding": [B, C_L], "top_indices": [B, k], "top_probs": [B, k], "top_names": [B, k]}

It is built once per worker from a checkpoint path and options; pickling it keeps only those (never the weights),
so a copy sent to another process loads the weights there, once per process (a per-process cache). Images are
decoded (swinref.preprocess.to_rgb: EXIF rotation, 16-bit, palette, CMYK, alpha) and preprocessed with the model's
own evaluation transform inside the call, so every engine sees the same numbers as `swinref predict`.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

import numpy as np

from swinref.errors import InputError, SwinrefError

__all__ = ["Predictor", "OUTPUTS", "IMAGE_COLUMNS", "top_k_arrays"]

# What a Predictor can return, by name: "logits" [B, classes]; "top": top_indices, top_probs, top_names [B, k];
# "embedding": the pooled features before the head [B, C_L]; "features": the pyramid, features.{i} [B, C_i, h_i,
# w_i]. Probabilities are float64 (the softmax is computed in float64), the rest in the model's dtype.
OUTPUTS = ("logits", "top", "embedding", "features")
# The column of a dict batch that holds the images, in the order looked for: Ray Data's read_images gives "image"
# (pixels), read_binary_files "bytes" (encoded files, with "path"), and a column of file names can be "path".
IMAGE_COLUMNS = ("image", "bytes", "path")

_MODELS: dict[tuple, Any] = {}  # per-process cache: a worker that unpickles many copies loads the weights once


def top_k_arrays(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most probable classes per row: indices [B, k] (int64, ties by the lower index) and their softmax
    probabilities [B, k] (computed in float64)."""
    from swinref.layers import softmax

    probs = softmax(np.asarray(logits, dtype=np.float64), np)
    k = min(k, probs.shape[-1])
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(probs, order, axis=-1)


def _load_cached(weights: str, options: dict[str, Any]) -> Any:
    import swinref

    try:
        stat = os.stat(weights)
        stamp = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        stamp = None  # swinref.load says what is wrong with the path
    key = (os.path.abspath(weights), stamp, repr(sorted(options.items())))
    model = _MODELS.get(key)
    if model is None:
        model = swinref.load(weights, **options)
        _MODELS.clear()  # one model per worker: a new checkpoint replaces the old one instead of adding to memory
        _MODELS[key] = model
    return model


class Predictor:
    """Batch inference from a checkpoint: `Predictor(weights, ...)(batch) -> dict of NumPy arrays`.

    weights: any checkpoint `swinref.load` reads (a path; the worker opens it, so it must be reachable there).
    outputs: any of OUTPUTS. top: k for "top". out_indices: the stages for "features" (None: all).
    threads: this worker's share of the cores (BLAS, OpenMP and the block's threads; see swinref.threads), set
             in the process that runs the first batch; None leaves the process's settings alone.
    crop: the centre crop of the official evaluation (None: as the model's size says, see preprocess.default_crop).
    on_error: "raise" (default) stops at the first image that cannot be decoded, naming it; "skip" returns an
             "error" column (empty for good rows) and NaN (or -1 for indices) in the rows of bad images.
    config, dtype, device, policy and config field overrides (img=384, ...) are swinref.load's.
    """

    def __init__(self, weights: str | os.PathLike, *, outputs: Iterable[str] = ("logits",), top: int = 5,
                 out_indices: Iterable[int] | None = None, threads: int | None = None, crop: bool | None = None,
                 on_error: str = "raise", config: Any = None, dtype: str = "float32", device: str = "cpu",
                 policy: str | None = None, **overrides: Any) -> None:
        outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        unknown = [o for o in outputs if o not in OUTPUTS]
        if unknown or not outputs:
            raise InputError(f"outputs {list(outputs)}: choose one or more of {', '.join(OUTPUTS)}")
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise InputError(f"top must be a positive integer (classes per image), got {top!r}")
        if on_error not in ("raise", "skip"):
            raise InputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self._options = dict(weights=os.fspath(weights), outputs=outputs, top=top,
                             out_indices=None if out_indices is None else tuple(out_indices), threads=threads,
                             crop=crop, on_error=on_error, config=config, dtype=dtype, device=device, policy=policy,
                             **overrides)
        if threads is not None:
            from swinref.threads import check_threads

            check_threads(threads)
        self.threads, self._threads_set = threads, False
        self.outputs, self.top, self.crop, self.on_error = outputs, top, crop, on_error
        self.model = _load_cached(os.fspath(weights), dict(config=config, dtype=dtype, device=device, policy=policy,
                                                            **overrides))
        cfg = self.model.config
        if len(cfg.img_size) != 2:
            raise InputError(f"{cfg.name} takes {len(cfg.img_size)}-axis inputs; a Predictor reads 2-D images")
        params = self.model.params
        if {"logits", "top"} & set(outputs) and "head.weight" not in params:
            raise InputError(f"{cfg.name} has no classification head (a backbone or num_classes 0): ask for "
                             "outputs=('embedding',) or ('features',) instead of logits / top")
        if "embedding" in outputs and "norm.weight" not in params:
            raise InputError(f"the checkpoint {weights!s} is a backbone without the final norm, so it has no "
                             "pooled embedding; ask for outputs=('features',)")
        if "features" in outputs:
            from swinref.model import check_out_indices

            self.out_indices = check_out_indices(cfg, out_indices)
        else:
            self.out_indices = None

    # Pickling keeps the options only: the copy loads the weights in its own process (once: see _load_cached).
    def __getstate__(self) -> dict[str, Any]:
        return dict(self._options)

    def __setstate__(self, options: dict[str, Any]) -> None:
        options = dict(options)
        self.__init__(options.pop("weights"), **options)

    def __repr__(self) -> str:
        return f"Predictor({self._options['weights']!r}, model={self.model.config.name}, outputs={self.outputs})"

    # -- preprocessing -------------------------------------------------------------------------------------------

    def preprocess_one(self, item: Any, name: str = "image") -> np.ndarray:
        """One image (a path, encoded bytes, a pixel array [H, W, 3] / [H, W], or a PIL image) -> [3, H, W]."""
        from swinref.preprocess import array_to_image, decode_bytes, load_image, preprocess, to_rgb

        if isinstance(item, (str, os.PathLike)):
            img = load_image(item)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            img = decode_bytes(bytes(item), name)
        elif isinstance(item, np.ndarray):
            img = array_to_image(item, name)
        elif hasattr(item, "mode") and hasattr(item, "convert"):
            img = to_rgb(item)
        else:
            raise InputError(f"{name}: cannot read an image from a {type(item).__name__}; pass a path, encoded "
                             "bytes, a pixel array [H, W, 3] or a PIL image")
        return preprocess(img, self.model.config.img_size, crop=self.crop)

    def _preprocessed(self, items: list[Any], names: list[str]) -> tuple[np.ndarray | None, list[str]]:
        """The batch [B_ok, 3, H, W] of the images that decode, and per item its error ('' when it decoded)."""
        arrays, errors = [], []
        for item, name in zip(items, names):
            try:
                arrays.append(self.preprocess_one(item, name))
                errors.append("")
            except SwinrefError as exc:
                if self.on_error == "raise":
                    raise
                errors.append(str(exc))
        dtype = self.model.dtype
        return (np.stack(arrays).astype(dtype, copy=False) if arrays else None), errors

    # -- the call ------------------------------------------------------------------------------------------------

    def run(self, x: Any) -> dict[str, np.ndarray]:
        """The requested outputs for a preprocessed batch x [B, 3, H, W], as NumPy arrays."""
        from swinref.backend import to_host

        if self.threads is not None and not self._threads_set:
            # In the process that runs the batches, not where the Predictor was built: a Dask or Spark driver
            # builds one to ship it, and keeps its own thread settings.
            from swinref.threads import limit_threads

            limit_threads(self.threads)
            self._threads_set = True
        model, wanted, out = self.model, set(self.outputs), {}
        if wanted & {"logits", "top", "embedding"}:
            pooled = model.pooled(x)
            if "embedding" in wanted:
                out["embedding"] = to_host(pooled)
            if wanted & {"logits", "top"}:
                logits = to_host(model.head(pooled))
                if "logits" in wanted:
                    out["logits"] = logits
                if "top" in wanted:
                    out["top_indices"], out["top_probs"] = top_k_arrays(logits, self.top)
                    out["top_names"] = self._names(out["top_indices"])
        if "features" in wanted:
            for i, f in zip(self.out_indices, model.features(x, out_indices=self.out_indices)):
                out[f"features.{i}"] = to_host(f)
        return out

    def _names(self, indices: np.ndarray) -> np.ndarray:
        from swinref.preprocess import class_name

        n = self.model.config.num_classes
        return np.array([[class_name(int(i), n) for i in row] for row in indices], dtype=object)

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:
        """Outputs for one batch: a float array [B, 3, H, W] (preprocessed), a uint8/uint16 array [B, H, W, 3] (pixels),
        a sequence of paths / bytes / pixel arrays, or a dict of columns (Ray Data, pandas) with one of
        IMAGE_COLUMNS; the dict's other columns of the same length are passed through (e.g. "path")."""
        passthrough: dict[str, Any] = {}
        if isinstance(batch, Mapping) or hasattr(batch, "columns"):  # a dict of columns, or a pandas DataFrame
            columns = {str(k): batch[k] for k in (batch.columns if hasattr(batch, "columns") else batch.keys())}
            key = next((c for c in IMAGE_COLUMNS if c in columns), None)
            if key is None:
                raise InputError(f"a batch of columns {sorted(columns)} has no image column; name it one of "
                                 f"{', '.join(IMAGE_COLUMNS)} (Ray Data's read_images gives 'image')")
            items = columns[key]
            n = len(items)
            passthrough = {c: np.asarray(v) for c, v in columns.items() if c != key and _length(v) == n}
            names = [str(p) for p in passthrough["path"]] if "path" in passthrough else None
        else:
            items, names = batch, None
        if isinstance(items, np.ndarray) and items.dtype.kind == "f":
            x = items
            if x.ndim != 4:
                raise InputError(f"a float batch must be preprocessed images [B, 3, H, W], got shape {list(x.shape)};"
                                 " pass pixels as uint8 [B, H, W, 3], or paths / bytes")
            return {**passthrough, **self.run(x.astype(self.model.dtype, copy=False))}
        items = list(items)
        if not items:
            raise InputError("the batch is empty: give at least one image")
        if names is None:
            names = [os.fspath(i) if isinstance(i, (str, os.PathLike)) else f"image {j}" for j, i in enumerate(items)]
        x, errors = self._preprocessed(items, names)
        if x is None:
            result: dict[str, np.ndarray] = {}
        else:
            result = self.run(x)
        if self.on_error == "skip":
            result = _scatter(result, [e == "" for e in errors], len(items), self._empty_row())
            result["error"] = np.array(errors, dtype=object)
        return {**passthrough, **result}

    def _empty_row(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        """Shape (per image) and dtype of every output, for a batch in which no image decoded."""
        cfg, dtype = self.model.config, np.dtype(self.model.dtype)
        k = min(self.top, cfg.num_classes)
        rows: dict[str, tuple[tuple[int, ...], Any]] = {}
        if "logits" in self.outputs:
            rows["logits"] = ((cfg.num_classes,), dtype)
        if "top" in self.outputs:
            rows.update(top_indices=((k,), np.int64), top_probs=((k,), np.float64), top_names=((k,), object))
        if "embedding" in self.outputs:
            rows["embedding"] = ((cfg.num_features,), dtype)
        if "features" in self.outputs:
            from swinref.plan import plan

            mp = plan(cfg, cfg.img_size, self.model.policy)
            for i in self.out_indices:
                st = mp.stages[i]
                rows[f"features.{i}"] = ((st.dim, *st.resolution), dtype)
        return rows


def _length(value: Any) -> int | None:
    try:
        return len(value)
    except TypeError:
        return None


def _scatter(result: dict[str, np.ndarray], ok: list[bool], n: int,
             rows: dict[str, tuple[tuple[int, ...], Any]]) -> dict[str, np.ndarray]:
    """Outputs for the good rows -> outputs for all n rows, the bad ones NaN (-1 for indices, '' for names)."""
    where = np.flatnonzero(ok)
    full = {}
    for name, (shape, dtype) in rows.items():
        dtype = np.dtype(dtype)
        fill = "" if dtype == object else (-1 if dtype.kind == "i" else np.nan)
        arr = np.full((n, *shape), fill, dtype=dtype)
        if name in result:
            arr[where] = result[name]
        full[name] = arr
    return full

