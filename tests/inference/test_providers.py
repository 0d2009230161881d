"""Which onnxruntime execution providers the server asks for."""

from __future__ import annotations

import pytest

from sleeve_inference.predictor import choose_providers


def test_default_on_a_machine_without_a_gpu_is_cpu() -> None:
    assert choose_providers(None) == ["CPUExecutionProvider"]
    assert choose_providers("") == ["CPUExecutionProvider"]


def test_explicit_cpu_is_kept() -> None:
    assert choose_providers(" CPUExecutionProvider , ") == ["CPUExecutionProvider"]


def test_unknown_provider_names_the_variable() -> None:
    with pytest.raises(ValueError, match="SLEEVE_ORT_PROVIDERS") as caught:
        choose_providers("CPUExecutionProvider,TachyonExecutionProvider")

    assert "TachyonExecutionProvider" in str(caught.value)
