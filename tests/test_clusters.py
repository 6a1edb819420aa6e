"""The cluster recipes of docs/datasets.md, run on a local cluster of this machine's cores, the Predictor unchanged.

Each engine's test runs when its package is installed (`pip install 'swinref[dask]'`, `'swinref[ray]'`,
`'swinref[spark]'` with a Java runtime) and is skipped with the reason otherwise; the test extra installs dask, so
CI always runs the Dask recipe. The proof: the embeddings and logits that come back equal the model's on the same
images, within 1e-6.
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

import swinref
from swinref.checkpoints import save_params
from swinref.inputs import find_images
from swinref.params import init_params
from swinref.preprocess import load_image, preprocess

TINY = swinref.SwinConfig(name="tiny-in1k", img_size=(64, 64), embed_dim=8, depths=(2, 2), num_heads=(1, 2),
                          window_size=4, num_classes=1000)
OUTPUTS = ("embedding", "logits")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A checkpoint and a folder of five RGB images of different sizes."""
    root = tmp_path_factory.mktemp("clusters")
    weights = root / "tiny.safetensors"
    save_params(init_params(TINY, seed=3), TINY, weights)
    folder = root / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(70, 90), (64, 64), (100, 80), (66, 120), (90, 72)]):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return weights, folder


def _expected(weights, paths):
    """What the model gives on the same images, preprocessed as swinref does, in one batch."""
    model = swinref.load(weights)
    x = np.stack([preprocess(load_image(p), TINY.img_size) for p in paths])
    pooled = model.pooled(x)
    return {"embedding": pooled, "logits": model.head(pooled)}


def _check(rows_by_path: dict[str, dict[str, np.ndarray]], weights, paths):
    assert sorted(rows_by_path) == sorted(paths)
    want = _expected(weights, paths)
    for key in OUTPUTS:
        got = np.stack([rows_by_path[p][key] for p in paths])
        np.testing.assert_allclose(got, want[key], rtol=0, atol=1e-6)


def _run_partition(paths, predictor):
    """Dask bag: one Predictor call per partition, kept whole with its paths (a bag of dicts)."""
    paths = list(paths)
    return [{"path": paths, **predictor(paths)}]


def test_dask_bag_recipe(dataset):
    db = pytest.importorskip("dask.bag", reason="the Dask recipe needs dask: pip install 'swinref[dask]'")
    weights, folder = dataset
    paths = [str(p) for p in find_images([folder])]
    predictor = swinref.Predictor(weights, outputs=OUTPUTS, threads=1)
    bag = db.from_sequence(paths, npartitions=2).map_partitions(_run_partition, predictor)
    # Two worker processes: the Predictor is pickled to each (its options only) and loads the weights there. They
    # are forked (dask spawns by default) to keep the test to a few seconds; the pickling is the same.
    import dask

    with dask.config.set({"multiprocessing.context": "fork"}):
        batches = bag.compute(scheduler="processes", num_workers=2)
    assert len(batches) == 2
    rows = {p: {k: out[k][j] for k in OUTPUTS} for out in batches for j, p in enumerate(out["path"])}
    _check(rows, weights, paths)
    # Bit for bit against the model on the same batches: the batch, not the engine, decides the last bits.
    for out in batches:
        want = _expected(weights, out["path"])
        for key in OUTPUTS:
            np.testing.assert_array_equal(out[key], want[key])


def test_ray_data_recipe(dataset, tmp_path):
    ray = pytest.importorskip("ray", reason="the Ray Data recipe needs ray: pip install 'swinref[ray]'")
    pytest.importorskip("ray.data", reason="the Ray Data recipe needs ray[data]: pip install 'swinref[ray]'")
    pq = pytest.importorskip("pyarrow.parquet", reason="write_parquet needs pyarrow: pip install 'swinref[ray]'")
    weights, folder = dataset
    paths = [str(p) for p in find_images([folder])]
    root = os.path.dirname(os.path.dirname(swinref.__file__))  # the workers import this swinref
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": root}})
    kwargs = {"weights": str(weights), "outputs": OUTPUTS, "threads": 1}
    # Two actors on half a core each: the other core reads and writes (actors that take every core starve the
    # read tasks, and the pipeline waits for ever).
    actors = dict(batch_size=2, concurrency=2, num_cpus=0.5, batch_format="numpy")
    try:
        ds = ray.data.read_images(str(folder), include_paths=True, mode="RGB")
        out_dir = tmp_path / "embeddings"
        ds.map_batches(swinref.Predictor, fn_constructor_kwargs=kwargs, **actors).write_parquet(str(out_dir))
        # The files' bytes instead of Ray's pixels: the Predictor decodes them as swinref predict does.
        raw = ray.data.read_binary_files(str(folder), include_paths=True)
        from_bytes = raw.map_batches(swinref.Predictor, fn_constructor_kwargs=kwargs, **actors).take_all()
    finally:
        ray.shutdown()
    table = pq.read_table(str(out_dir))
    rows = {}
    for path, emb, logits in zip(table["path"].to_pylist(), table["embedding"].to_numpy(zero_copy_only=False),
                                 table["logits"].to_numpy(zero_copy_only=False)):
        rows[os.path.join(str(folder), os.path.basename(path))] = {"embedding": np.asarray(emb, np.float32),
                                                                   "logits": np.asarray(logits, np.float32)}
    _check(rows, weights, paths)
    _check({os.path.join(str(folder), os.path.basename(r["path"])): r for r in from_bytes}, weights, paths)


@pytest.mark.slow
def test_spark_predict_batch_udf_recipe(dataset, monkeypatch):
    pytest.importorskip("pyspark", reason="the Spark recipe needs pyspark: pip install 'swinref[spark]'")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("the Spark recipe needs a Java runtime (java on PATH or JAVA_HOME)")
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import SparkSession
    from pyspark.sql.types import ArrayType, FloatType, StructField, StructType

    weights, folder = dataset
    paths = [str(p) for p in find_images([folder])]
    # Spark's Python workers: this interpreter, importing this swinref (they start in a scratch folder).
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    root = os.path.dirname(os.path.dirname(swinref.__file__))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))

    def make_predict_fn():
        predictor = swinref.Predictor(str(weights), outputs=OUTPUTS, threads=1)  # once per Python worker

        def predict(batch_paths: np.ndarray) -> dict[str, np.ndarray]:
            out = predictor(list(batch_paths))
            return {k: out[k] for k in OUTPUTS}

        return predict

    schema = StructType([StructField(k, ArrayType(FloatType())) for k in OUTPUTS])
    udf = predict_batch_udf(make_predict_fn, return_type=schema, batch_size=2)
    spark = (SparkSession.builder.master("local[2]").appName("swinref-test")
             .config("spark.ui.enabled", "false").getOrCreate())
    try:
        df = spark.createDataFrame([(p,) for p in paths], ["path"]).repartition(2)
        got = df.withColumn("out", udf("path")).select("path", "out.*").collect()
    finally:
        spark.stop()
    rows = {r["path"]: {k: np.asarray(r[k], np.float32) for k in OUTPUTS} for r in got}
    _check(rows, weights, paths)
