"""Captured tensors on a GPU (the strict fake CuPy of tests/fakecupy.py): they choose the device
when the arguments don't, and a capture on another device than the call is a clear error."""
import numpy as np
import pytest

import fakecupy
import tracejit as tj
from tracejit.runtime.cuda_backend import CudaExecutable
from tracejit.runtime.llvm_backend import LLVMExecutable


def test_gpu_capture_with_cpu_arguments_is_a_clear_error(fake_gpu):
    w = tj.ones(3, device="cuda")
    f = tj.compile(lambda x: x * w)
    with pytest.raises(RuntimeError, match=r"<lambda>: it reads captured tensors on cuda:0 but "
                       r"runs on cpu \(at test_captures_devices.py:\d+\)"):
        f(tj.ones(3))


def test_gpu_capture_chooses_the_device_for_host_arrays(fake_gpu):
    w = tj.ones(3, device="cuda")
    f = tj.compile(lambda x: x * w.reshape(1, 3))
    assert isinstance(f.lower(np.ones((2, 3), np.float32))._entry.exe, CudaExecutable)


def test_capture_moved_to_another_device_traces_again(fake_gpu):
    w = tj.ones(3)
    f = tj.compile(lambda x: x * w[None])
    x = np.ones((2, 3), np.float32)
    assert isinstance(f.lower(x)._entry.exe, LLVMExecutable)
    w.data = tj.ones(3, device="cuda")
    assert isinstance(f.lower(x)._entry.exe, CudaExecutable)
    assert f.cache_info().misses == 2
