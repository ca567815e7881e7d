"""The chunked LM-head cross-entropy (:mod:`neurolm.lm.head`) equals the plain one, and the model routes through it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from test_lm import windows

from neurolm.data.batch import collate_windows
from neurolm.lm import NeuroLM
from neurolm.lm.head import chunked_cross_entropy
from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig


def _case(n: int = 37, d: int = 16, outputs: int = 301, bias: bool = True, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_()
    w = (torch.randn(outputs, d, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    b = (torch.randn(outputs, generator=g, dtype=torch.float64) * 0.1).requires_grad_() if bias else None
    target = torch.randint(0, outputs, (n,), generator=g)
    target[::5] = -100
    return h, w, b, target


def _grads(loss: torch.Tensor, *tensors: torch.Tensor | None) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, [t for t in tensors if t is not None]))


@pytest.mark.parametrize("chunk", [0, 1, 7, 37, 100])
@pytest.mark.parametrize("bias", [True, False])
def test_loss_accuracy_and_gradients_equal_the_unchunked_head(chunk, bias):
    h, w, b, target = _case(bias=bias)
    logits = F.linear(h, w, b)
    plain = F.cross_entropy(logits, target)
    counted = target != -100
    plain_acc = ((logits.argmax(-1) == target) & counted).sum() / counted.sum()
    loss, acc = chunked_cross_entropy(h, w, b, target, chunk=chunk)
    torch.testing.assert_close(loss.double(), plain, rtol=1e-6, atol=1e-7)
    assert float(acc) == pytest.approx(float(plain_acc)) and not acc.requires_grad
    # a non-trivial upstream gradient: the backward scales the gradient computed in the forward
    for mine, theirs in zip(_grads(3.5 * loss, h, w, b), _grads(3.5 * plain, h, w, b)):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-9)


def test_a_hit_is_a_target_whose_logit_is_the_largest_ties_included():
    """The accuracy is read off the softmax's max, not an argmax: a target tied with another output counts."""
    weight = torch.tensor([[1.0], [1.0], [0.0]])  # outputs 0 and 1 always tie
    h = torch.tensor([[1.0], [-1.0], [2.0]])  # logits (1, 1, 0), (-1, -1, 0), (2, 2, 0)
    target = torch.tensor([1, 2, -100])  # a tie → hit; the largest → hit; an ignored row
    _, accuracy = chunked_cross_entropy(h, weight, None, target, chunk=2)
    assert accuracy.item() == 1.0
    _, accuracy = chunked_cross_entropy(h, weight, None, torch.tensor([2, 0, -100]))
    assert accuracy.item() == 0.0


def test_float32_gradients_reach_weights_used_twice():
    """The head weight sliced (codes only) and reused elsewhere in the graph: autograd adds the contributions."""
    h, w, _, target = _case(outputs=64)
    h, w = h.float().detach().requires_grad_(), w.float().detach().requires_grad_()
    target = target.clamp_max(31)

    def both(loss):
        return _grads(loss + w.square().sum() * 1e-3, h, w)

    mine = both(chunked_cross_entropy(h, w[32:], None, target, chunk=8)[0])
    theirs = both(F.cross_entropy(F.linear(h, w[32:]), target))
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_matches_the_plain_head_under_autocast():
    h, w, _, target = _case(n=64, d=32, outputs=500, bias=False)
    h, w = h.float().detach().requires_grad_(), w.float().detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mine, _ = chunked_cross_entropy(h, w, None, target, chunk=16)
        theirs = F.cross_entropy(F.linear(h, w), target)
    assert mine.dtype == torch.float32
    torch.testing.assert_close(mine, theirs.float(), rtol=1e-3, atol=1e-3)
    for a, b in zip(_grads(mine, h, w), _grads(theirs, h, w)):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-3)


def test_without_grad_only_the_loss_and_a_second_backward_refuses():
    h, w, b, target = _case()
    with torch.no_grad():
        loss, _ = chunked_cross_entropy(h, w, b, target, chunk=8)
    assert not loss.requires_grad
    torch.testing.assert_close(loss.double(), F.cross_entropy(F.linear(h, w, b), target).detach())
    loss, _ = chunked_cross_entropy(h, w, b, target, chunk=8)
    loss.backward(retain_graph=True)  # the gradient computed in the forward is handed over once, not copied
    with pytest.raises(RuntimeError, match="second backward"):
        loss.backward()


def test_all_targets_ignored_gives_zero_and_bad_chunk_is_an_error():
    h, w, b, target = _case(n=4)
    loss, acc = chunked_cross_entropy(h, w, b, torch.full_like(target, -100), chunk=2)
    assert float(loss.detach()) == 0.0 and float(acc) == 0.0
    with pytest.raises(ValueError, match="chunk"):
        chunked_cross_entropy(h, w, b, target, chunk=-1)


def test_model_losses_do_not_depend_on_the_chunk():
    """``eeg_forward`` (all outputs and codes only) and ``text_forward`` give the same loss and gradients for any
    ``head_chunk``: the model's call sites go through the chunked head."""
    torch.manual_seed(0)
    model = NeuroLM.from_tokenizer(NeuralTokenizer(TokenizerConfig.from_preset("tiny")).eval(), "tiny",
                                   spectral_input=False).train()
    batch = collate_windows(windows([(3, 4), (2, 6)]))
    crops = torch.randint(0, 50257, (2, 17), generator=torch.Generator().manual_seed(3))

    def run(chunk: int):
        model.head_chunk = chunk
        model.zero_grad(set_to_none=True)
        out = [model.eeg_forward(batch), model.eeg_forward(batch, codes_only=True), model.text_forward(crops)]
        sum(o["loss"] for o in out).backward()
        return [o["loss"].detach() for o in out], model.gpt.lm_head.weight.grad.clone()

    (losses_all, grad_all), (losses_chunked, grad_chunked) = run(0), run(5)
    torch.testing.assert_close(losses_chunked, losses_all, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_chunked, grad_all, rtol=1e-4, atol=1e-7)
