"""sweepq's reference workload: fine-tune a BERT-style classifier under torchrun for one sweep trial.

Entry points: ``torchrun ... -m trainer --key=value ...`` / the ``trainer`` console script, and
``trainer prepare`` to split a raw labelled CSV. See ``trainer/README.md``.
"""
