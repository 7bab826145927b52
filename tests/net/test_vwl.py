"""The journal extension (VWL) in net/vwe.py and net/classifier.py: decorrelation loss, memory-bank sums,
EMA, first codebook; the memory bank in the network, under DDP and in checkpoints."""
import math
import os

import pytest
import torch

from engine import distributed
from engine.checkpoint import save_checkpoint
from net.classifier import VWEClassifier as Net
from net.classifier_weights import load_checkpoint
from net.vwe import MemoryBankCodebook, decorrelation_loss, ema_codebook, features_per_word, sample_codebook


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


# ---------------------------------------------------------------------------------------------
# The memory-bank codebook in the network, under DDP and in checkpoints



def test_memory_bank_first_step_draws_features_then_moves_by_ema():
    bank = MemoryBankCodebook(k_words=6, feature_dim=4, rho=0.5).train()
    generator = torch.Generator().manual_seed(0)
    first = torch.randn(2, 4, 3, 3, generator=generator)
    bank(first)
    bank.update()
    vectors = first.permute(0, 2, 3, 1).reshape(-1, 4)
    assert bool(bank.initialised) and all(any(torch.equal(row, v) for v in vectors) for row in bank.codebook)

    before = bank.codebook.clone()
    second = torch.randn(2, 4, 3, 3, generator=generator)
    words = bank(second).argmax(dim=1)
    bank.update()
    expected = ema_codebook(before, *features_per_word(second, words, 6), rho=0.5)
    torch.testing.assert_close(bank.codebook, expected)
    with pytest.raises(RuntimeError, match="needs a training forward"):
        bank.update()


def test_memory_bank_network_trains_no_histogram_and_saves_its_bank(tmp_path):
    torch.manual_seed(0)
    net = Net(k_words=8, pretrained=False, freeze_bn=False, codebook="memory_bank", detach_stage2=False).train()
    assert not any(p.requires_grad for p in net.hist_classifier.parameters())
    assert "word_encoder.codebook" not in dict(net.named_parameters())  # never seen by the optimizer
    losses = net.training_losses(net(torch.randn(2, 3, 48, 48)), torch.eye(20)[:2])
    assert set(losses) == {"cls", "word"}
    sum(losses.values()).backward()
    net.update_codebook()
    assert bool(net.word_encoder.initialised)

    save_checkpoint(tmp_path / "bank.pth", net, {"model": {}})
    fresh = Net(k_words=8, pretrained=False, codebook="memory_bank")
    load_checkpoint(fresh, tmp_path / "bank.pth")
    assert torch.equal(fresh.word_encoder.codebook, net.word_encoder.codebook) and bool(fresh.word_encoder.initialised)


def test_learned_codebook_with_decorrelation_loss():
    torch.manual_seed(0)
    net = Net(k_words=8, pretrained=False, freeze_bn=False, decov_weight=2.0).train()
    losses = net.training_losses(net(torch.randn(2, 3, 48, 48)), torch.eye(20)[:2])
    assert set(losses) == {"cls", "hist", "word", "decov"}
    torch.testing.assert_close(losses["decov"], 2.0 * decorrelation_loss(net.word_encoder.codebook))
    with pytest.raises(Exception, match="model.decov_weight applies to the learned codebook"):
        Net(k_words=8, pretrained=False, codebook="memory_bank", decov_weight=1.0)


def _bank_steps(ctx, halves, out_dir):
    """Two memory-bank steps on this rank's half of each batch, with the all-reduce and broadcast of training."""
    bank = MemoryBankCodebook(k_words=5, feature_dim=3, rho=0.25).train()
    torch.manual_seed(ctx.rank)  # different draws per rank: the broadcast must make them agree
    for batch in halves:
        bank(batch[ctx.rank])
        if bool(bank.initialised):
            torch.save(bank.codebook.clone(), os.path.join(out_dir, f"before{ctx.rank}.pt"))
        bank.update(distributed.all_reduce_sum, distributed.broadcast_tensor)
    torch.save(bank.codebook, os.path.join(out_dir, f"rank{ctx.rank}.pt"))


def test_all_reduced_update_equals_the_single_process_update_on_the_whole_batch(tmp_path):
    generator = torch.Generator().manual_seed(3)
    batches = [torch.randn(4, 3, 2, 2, generator=generator) for _ in range(2)]
    halves = [(batch[:2], batch[2:]) for batch in batches]
    distributed.spawn(_bank_steps, 2, "cpu", halves, str(tmp_path))
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert torch.equal(rank0, rank1)  # every replica holds the same codebook

    single = MemoryBankCodebook(k_words=5, feature_dim=3, rho=0.25).train()
    single.codebook.copy_(torch.load(tmp_path / "before0.pt"))  # the shared codebook after the first step
    single.initialised.fill_(True)
    single(batches[1])
    single.update()
    torch.testing.assert_close(rank0, single.codebook)
