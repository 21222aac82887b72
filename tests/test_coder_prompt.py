"""The coder's prompt carries the contract's own rendered text, so what the coder reads and what the validator
checks cannot disagree."""

from __future__ import annotations

from capnas.agents.coder import choose_snippets, coder_messages
from capnas.contracts import get_contract
from capnas.tools.design.components import get_component


def _contract():
    return get_contract("caption-net-v1", vocab_size=321, image_size=48, max_len=20, max_params=1_234_567)


def test_code_mode_prompt_holds_the_rendered_contract_verbatim_and_the_snippets() -> None:
    contract = _contract()
    prompt = coder_messages("code", contract, ["small_cnn", "gru"], "- c1 cider=0.5", "add attention")[1].content
    assert contract.render() in prompt
    assert get_component("small_cnn").source() in prompt and get_component("gru").source() in prompt
    assert "- c1 cider=0.5" in prompt and "add attention" in prompt


def test_spec_mode_prompt_states_the_contract_budgets_and_options() -> None:
    contract = _contract()
    prompt = coder_messages("spec", contract, ["resnet", "lstm"], "", "")[1].content
    assert "caption-net-v1" in prompt and "1,234,567 parameters" in prompt and "48x48" in prompt
    assert "vocabulary of 321 ids" in prompt
    for option in get_component("lstm").tunable():
        assert option in prompt


def test_a_repair_prompt_lists_every_violation_with_line_and_hint() -> None:
    violation = {"code": "IMP-001", "line": 3, "message": "import of os", "hint": "use torch only"}
    prompt = coder_messages("code", _contract(), [], "", "", repair={"code": "import os", "spec": "null",
                                                                    "violations": [violation]})[1].content
    assert "- IMP-001 (line 3): import of os Hint: use torch only" in prompt and "import os" in prompt


def test_snippets_alternate_encoder_and_decoder() -> None:
    assert choose_snippets(["vit", "resnet"], ["gru"], 3) == ["vit", "gru", "resnet"]
