"""Token ids a request sends (logit_bias keys, embeddings token inputs) against the vocabulary."""

from __future__ import annotations

import pytest
from hearth.scheduler.errors import InvalidRequest
from hearth.scheduler.messages import ChatJob, ChatMessage, EmbedJob, RequestedSampling
from hearth.scheduler.token_ids import check_token_ids


def chat(bias: dict[int, float]) -> ChatJob:
    return ChatJob("r", "fe", "k", "m", [ChatMessage("user", "x")],
                   RequestedSampling(logit_bias=bias))


def test_logit_bias_ids_inside_the_vocabulary_pass() -> None:
    check_token_ids(chat({0: 1.0, 99: -100.0}), 100)


@pytest.mark.parametrize("token", [100, 999999, 2**31 - 1])
def test_a_logit_bias_id_outside_the_vocabulary_names_it(token: int) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_token_ids(chat({3: 1.0, token: 5.0}), 100)
    assert err.value.param == "logit_bias"
    assert f"token id {token}" in err.value.message and "100 tokens" in err.value.message


def test_embedding_token_inputs_name_the_input() -> None:
    job = EmbedJob("r", "fe", "k", "m", [], [[1, 2], [3, 100]])
    with pytest.raises(InvalidRequest) as err:
        check_token_ids(job, 100)
    assert err.value.param == "input" and "input[1]" in err.value.message


def test_an_unknown_vocabulary_size_checks_nothing() -> None:
    check_token_ids(chat({10**9: 1.0}), None)
