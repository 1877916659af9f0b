"""The GPU path's choices, decided from the device's capability (passed in here, so no GPU is needed)."""

from __future__ import annotations

import functools

import pytest
import torch

from trainer.accel import configure_math, maybe_compile, optimizer_options, resolve_precision
from trainer.config import ConfigError

V100, T4, A100, H100 = (7, 0), (7, 5), (8, 0), (9, 0)


@pytest.mark.parametrize("requested, device, capability, expected, scaled", [
    ("auto", "cuda", A100, "bf16", False),
    ("auto", "cuda", H100, "bf16", False),
    ("auto", "cuda", V100, "fp16", True),  # the seed's p3.8xlarge: no bf16 tensor cores
    ("auto", "cuda", T4, "fp16", True),
    ("auto", "cpu", None, "fp32", False),
    ("fp16", "cuda", A100, "fp16", True),
    ("fp16", "cpu", None, "fp16", True),
    ("bf16", "cpu", None, "bf16", False),
    ("fp32", "cuda", V100, "fp32", False),
], ids=lambda v: str(v))
def test_precision_follows_the_device(requested, device, capability, expected, scaled):
    plan = resolve_precision(requested, device_type=device, capability=capability)
    assert (plan.name, plan.loss_scaling, plan.device_type) == (expected, scaled, device)
    if device == "cpu":  # a CUDA GradScaler needs CUDA
        assert (plan.grad_scaler() is not None) is scaled


def test_bf16_on_a_gpu_without_bf16_tensor_cores_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as error:
        resolve_precision("bf16", device_type="cuda", capability=V100, device_name="Tesla V100-SXM2-16GB")
    message = str(error.value)
    assert "Tesla V100-SXM2-16GB (compute capability 7.0) has no bf16 tensor cores" in message
    assert "--precision=auto" in message and "--precision=fp16" in message


def test_fp16_loss_scaling_trains_on_cpu():
    # GIVEN a model stepped through autocast fp16 and a GradScaler (the V100 path, run on CPU)
    torch.manual_seed(0)
    plan = resolve_precision("fp16", device_type="cpu")
    model, scaler = torch.nn.Linear(8, 2), plan.grad_scaler()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
    losses = []
    for _ in range(20):
        with plan.autocast():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    # THEN the loss went down and the scale is a finite power of two
    assert losses[-1] < losses[0] and scaler.get_scale() > 1


def test_cpu_keeps_torch_defaults_and_cuda_gets_fused_kernels():
    assert configure_math(torch.device("cpu")) == {}
    assert optimizer_options(torch.device("cpu")) == {} and optimizer_options(torch.device("cuda", 0)) == {"fused": True}


def test_compile_is_applied_only_when_asked():
    model = torch.nn.Linear(2, 2)
    calls = []
    assert maybe_compile(model, False, compiler=lambda m, **kw: calls.append(kw)) is model and calls == []
    maybe_compile(model, True, compiler=lambda m, **kw: calls.append((m, kw)))
    assert calls == [(model, {"dynamic": True})]


@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one():
    # torch.compile's graph capture with dynamic shapes, without Inductor's C++ codegen (minutes on a busy CPU)
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32))
    compiled = maybe_compile(model, True, compiler=functools.partial(torch.compile, backend="eager"))
    for length in (8, 13):  # dynamic padding: another sequence length, no failure
        ids = torch.randint(0, 100, (4, length))
        inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1, 0, 1]))
        model.eval()
        assert torch.allclose(compiled(**inputs).loss, model(**inputs).loss, atol=1e-6)
