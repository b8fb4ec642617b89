import pytest
import torch

from mdd.runtime import tf32, torch_threads


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_tf32_sets_and_restores_even_on_error():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with pytest.raises(RuntimeError):
        with tf32(not before[1]):
            assert torch.backends.cudnn.allow_tf32 is (not before[1])
            assert torch.backends.cuda.matmul.allow_tf32 is (not before[1])
            raise RuntimeError
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
