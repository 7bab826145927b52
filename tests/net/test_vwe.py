import torch
import torch.nn.functional as F

from net.vwe import VisualWordEncoder, soft_word_assignment, word_histogram, word_targets


def test_assignment_is_a_softmax_of_cosine_similarity():
    features = torch.tensor([[3.0, 0.0], [0.0, 2.0]]).T.reshape(1, 2, 1, 2)  # two positions: e1*3, e2*2
    codebook = torch.tensor([[1.0, 0.0], [0.0, 5.0], [1.0, 1.0]])
    assignment = soft_word_assignment(features, codebook)
    s = 2 ** -0.5
    expected_first = torch.softmax(torch.tensor([1.0, 0.0, s]), 0)
    expected_second = torch.softmax(torch.tensor([0.0, 1.0, s]), 0)
    assert torch.allclose(assignment[0, :, 0, 0], expected_first, atol=1e-6)
    assert torch.allclose(assignment[0, :, 0, 1], expected_second, atol=1e-6)


def test_histogram_sums_to_the_number_of_positions():
    torch.manual_seed(0)
    assignment = soft_word_assignment(torch.randn(3, 16, 5, 7), torch.randn(10, 16))
    histogram = word_histogram(assignment)
    assert histogram.shape == (3, 10)
    assert torch.allclose(histogram.sum(dim=1), torch.full((3,), 35.0))


def test_word_targets_mark_the_argmax_words_only():
    assignment = torch.zeros(2, 4, 1, 3)
    assignment[0, 1, 0, :] = 1.0          # image 0: word 1 wins everywhere
    assignment[1, 0, 0, 0] = 1.0          # image 1: words 0, 3, 3
    assignment[1, 3, 0, 1:] = 1.0
    assert word_targets(assignment).tolist() == [[0, 1, 0, 0], [1, 0, 0, 1]]


def test_codebook_learns_only_through_the_histogram_and_features_are_detached():
    torch.manual_seed(0)
    encoder = VisualWordEncoder(k_words=6, feature_dim=8)
    features = torch.randn(2, 8, 3, 3, requires_grad=True)
    assignment = encoder(features)
    word_histogram(assignment).pow(2).sum().backward()
    assert encoder.codebook.grad is not None and encoder.codebook.grad.abs().sum() > 0
    assert features.grad is None
    assert not word_targets(assignment).requires_grad


def test_codebook_init_matches_a_kaiming_normal_conv_weight():
    torch.manual_seed(0)
    encoder = VisualWordEncoder(k_words=256, feature_dim=2048)
    # kaiming_normal_(a=sqrt(5)), fan_in = 2048: std = sqrt(2 / (1 + 5)) / sqrt(2048)
    expected_std = (2 / 6) ** 0.5 / 2048 ** 0.5
    assert abs(encoder.codebook.std().item() / expected_std - 1) < 0.02
    assert F.normalize(encoder.codebook, dim=1).shape == (256, 2048)
