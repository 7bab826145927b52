"""The journal extension's codebook pieces: decorrelation loss, memory-bank sums, EMA, first codebook."""
import math

import pytest
import torch

from net.vwe import decorrelation_loss, ema_codebook, features_per_word, sample_codebook


def test_decorrelation_loss_by_hand():
    codebook = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 3.0]])
    # centred rows: [-1, 0, 1] and [-1, -1, 2]; G = [[2, 3], [3, 6]]
    frobenius = math.sqrt(2 ** 2 + 3 ** 2 + 3 ** 2 + 6 ** 2)
    diagonal = math.sqrt(2 ** 2 + 6 ** 2)
    loss = decorrelation_loss(codebook)
    assert loss.dim() == 0 and loss.item() == pytest.approx(0.5 * (frobenius - diagonal))
    assert decorrelation_loss(codebook[:, :, None, None]).item() == pytest.approx(loss.item())  # conv-weight shape


def test_decorrelation_loss_is_zero_for_orthogonal_centred_words_and_trains_the_codebook():
    orthogonal = torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]])
    assert decorrelation_loss(orthogonal).item() == pytest.approx(0.0, abs=1e-7)
    codebook = torch.randn(8, 16, requires_grad=True)
    decorrelation_loss(codebook).backward()
    assert codebook.grad is not None and codebook.grad.abs().sum() > 0


def test_features_per_word_sums_and_counts():
    features = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    words = torch.tensor([[[0, 2], [2, 2]], [[0, 0], [1, 2]]])
    sums, counts = features_per_word(features, words, k_words=4)
    assert counts.tolist() == [3.0, 1.0, 4.0, 0.0]
    vectors = features.permute(0, 2, 3, 1).reshape(-1, 3)
    flat_words = words.reshape(-1)
    for word in range(4):
        torch.testing.assert_close(sums[word], vectors[flat_words == word].sum(dim=0))


def test_ema_update_and_unchosen_words_decay():
    codebook = torch.ones(3, 2)
    sums = torch.tensor([[4.0, 8.0], [0.0, 0.0], [3.0, 3.0]])
    counts = torch.tensor([2.0, 0.0, 3.0])
    updated = ema_codebook(codebook, sums, counts, rho=0.1)
    torch.testing.assert_close(updated[0], 0.1 * torch.tensor([2.0, 4.0]) + 0.9)
    torch.testing.assert_close(updated[1], torch.full((2,), 0.9))  # nobody chose word 1: it decays
    torch.testing.assert_close(updated[2], torch.ones(2))  # its mean equals its value


def test_summed_shares_give_the_update_of_the_whole_batch():
    """What the DDP all-reduce relies on: sums and counts of two halves add up to those of the batch."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(4, 5, 3, 3, generator=generator)
    words = torch.randint(0, 6, (4, 3, 3), generator=generator)
    codebook = torch.randn(6, 5, generator=generator)
    whole = ema_codebook(codebook, *features_per_word(features, words, 6), rho=1e-3)
    halves = [features_per_word(features[part], words[part], 6) for part in (slice(0, 2), slice(2, 4))]
    summed = ema_codebook(codebook, halves[0][0] + halves[1][0], halves[0][1] + halves[1][1], rho=1e-3)
    torch.testing.assert_close(summed, whole)


def test_first_codebook_is_drawn_from_the_features_without_gradient():
    features = torch.randn(2, 4, 3, 3, requires_grad=True)
    codebook = sample_codebook(features, 10, torch.Generator().manual_seed(1))
    vectors = features.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    assert codebook.shape == (10, 4) and not codebook.requires_grad
    assert all(any(torch.equal(row, vector) for vector in vectors) for row in codebook)
