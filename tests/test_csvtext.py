"""resflow.results.csvtext.to_csv_text against pandas' own df.to_csv(index=False): the same text, byte for
byte, on resflow's tables and on generated frames with the awkward values (NaN, inf, -0.0, None,
text with commas, quotes and newlines, mixed objects)."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resflow.config.loading import load_config
from resflow.experiment import run
from resflow.results.csvtext import to_csv_text


def same(df: pd.DataFrame) -> None:
    assert to_csv_text(df) == df.to_csv(index=False)


@pytest.mark.parametrize("train", [False, True])
def test_resflow_tables(train):
    cfg = {"model": {"depth": 3, "width": 4}, "seeds": 2, "data": {"batch_size": 2}}
    if train:
        cfg["train"] = {"steps": 3, "batch_size": 4}
    result = run(load_config(cfg))
    for df in (result.grads, result.params, result.summary, result.train):
        if df is not None:
            assert len(df) > 0
            same(df)


floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 1e16, 1e-5, 0.1, 123456789012345.0, 5e-324, math.inf, -math.inf, math.nan]),
)
texts = st.one_of(st.none(), st.text(alphabet=st.sampled_from(list('ab ,"\n\r\t-=.é')), max_size=6))


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(0, 12),
    data=st.data(),
)
def test_generated_frames(n, data):
    cols = {
        "f": data.draw(st.lists(floats, min_size=n, max_size=n)),
        "i": data.draw(st.lists(st.integers(-(2**62), 2**62), min_size=n, max_size=n)),
        "b": data.draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        's, "q"': data.draw(st.lists(texts, min_size=n, max_size=n)),
        "const": ["deep50"] * n,
        "mixed": data.draw(st.lists(st.one_of(st.none(), st.integers(-5, 5), floats, st.booleans()), min_size=n, max_size=n)),
    }
    df = pd.DataFrame(cols)
    if n:
        df["obj_num"] = pd.Series(
            data.draw(st.lists(st.one_of(st.integers(0, 3), st.floats(0, 3)), min_size=n, max_size=n)), dtype=object
        )
    same(df)


def test_repeated_values_and_other_kinds():
    n = 1000
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "variant": np.repeat(["a", "b,c", 'say "hi"', None], n // 4),
            "x": np.exp(rng.normal(0, 30, n)),
            "scale": np.repeat([0.5, 1.0, 1.5, np.nan], n // 4),
            "f32": rng.normal(size=n).astype(np.float32),  # handed to pandas
            "cat": pd.Categorical(np.repeat(["p", "q"], n // 2)),  # handed to pandas
        }
    )
    same(df)
    same(df[["variant", "x", "scale"]])
    same(df.iloc[:0])


def test_one_column_with_empty_fields():
    same(pd.DataFrame({"a": ["x", None, ""]}))


def test_kinds_handed_to_pandas():
    same(pd.DataFrame({"seed": pd.array([1, None, 3], dtype="Int64"), "x": [0.5, 0.25, 1.0]}))  # not "1.0"
    same(pd.DataFrame({"u": pd.array([2**63 + 1, None], dtype="UInt64"), "b": pd.array([True, None], dtype="boolean")}))
    same(pd.DataFrame({None: [1, 2], "x": [0.5, 1.5]}))  # a name that is not text
    same(pd.DataFrame([[1, 2.5]], columns=pd.MultiIndex.from_tuples([("a", "b"), ("a", "c")])))
    same(pd.DataFrame({"t": pd.date_range("2026-01-01", periods=2, tz="UTC"), "x": [1.0, float("nan")]}))
