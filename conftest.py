"""Set-up shared by every test session: tests/ and each plugin's tests."""

import contextlib
import importlib.util

# TensorBoard's event readers import TensorFlow when it is installed, and once TensorFlow's
# libraries are loaded, importing torch's triton (torch.optim and torch.compile do on first
# use) segfaults the process. Loading triton first, as cifarfw_keras._tf does for runs,
# makes every test order safe (e.g. `pytest plugins/cifarfw-torch-cnn`). A broken triton
# only matters to torch, which reports it itself.
if importlib.util.find_spec("triton") is not None:
    with contextlib.suppress(Exception):
        import triton  # noqa: F401
