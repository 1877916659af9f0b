"""No host–device synchronisation in a training step: the trainer's own code reads no device value per step.

On a GPU every read of a device tensor on the host (``.item()``, ``.cpu()``, ``float(t)``, ``bool(t)``…)
and every tensor built from Python values directly on the device waits for the GPU's queue to drain.
Measured on CPU with a ``TorchFunctionMode`` that records such calls made *directly from trainer/
code* (torch's and transformers' internals are theirs): the same trial is trained with 15 and with
30 optimizer steps — same data, same evaluations, same checkpoints, no step logging — and the
trainer's reads must be the same in both, i.e. zero per step.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from torch.overrides import TorchFunctionMode

from trainer.context import TrialContext
from trainer.distributed import DistInfo
from trainer.train import training_function

TRAINER = str(Path(__file__).resolve().parents[2] / "trainer")
READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "__format__",
         "__repr__", "__str__"}
FACTORIES = {"tensor", "as_tensor", "full", "zeros", "ones", "empty", "arange"}


class HostReads(TorchFunctionMode):
    """Counts device reads and on-device tensors built from Python values, by trainer source line."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in READS or (name in FACTORIES and kwargs.get("device") is not None):
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith(TRAINER):
                self.calls[f"{Path(caller.f_code.co_filename).name}:{caller.f_lineno} {name}"] += 1
        return func(*args, **kwargs)


def _reads(tmp_path, tiny, batch_size: int) -> Counter[str]:
    config = tiny(batch_size=batch_size, epochs=1, log_every=10**6, checkpoint_every=0, eval_batch_size=32)
    context = TrialContext.from_env({}, output_dir=str(tmp_path / f"batch-{batch_size}"))
    with HostReads() as mode:
        result = training_function(config, context, DistInfo())
    assert result["global_step"] == 240 // batch_size
    return mode.calls


def test_a_training_step_reads_nothing_from_the_device(tmp_path, tiny):
    fifteen, thirty = _reads(tmp_path, tiny, batch_size=16), _reads(tmp_path, tiny, batch_size=8)
    per_step = {line: thirty[line] - fifteen[line] for line in thirty if thirty[line] != fifteen[line]}
    assert per_step == {}, f"device reads that grow with the number of steps: {per_step}"
    assert sum(fifteen.values()) > 0  # the instrument sees the evaluation's and checkpoint's reads
