# syntax=docker/dockerfile:1
# The trial image: torchrun + the sweepq trainer on a pinned CUDA PyTorch base.
# Build from the repository root:  docker build -f docker/trainer.Dockerfile -t sweepq-trainer:0.1.0 .
#
# torch comes from the base image (its CUDA build). pyproject.toml pins torch==2.13.0 for the CPU
# wheel on dev machines, so the project is installed with --no-deps and its other dependencies
# with a constraint that holds torch at the base image's version: pip can never replace it.
ARG BASE_IMAGE=pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/sweepq
COPY pyproject.toml ./
COPY docker/requirements.py docker/requirements.py
# python-etcd: torchrun's etcd rendezvous backend, used by the ElasticJob kind.
RUN python -c "import torch; print(f'torch=={torch.__version__}')" > /tmp/constraints.txt \
 && python docker/requirements.py --extra trainer --exclude torch > /tmp/requirements.txt \
 && echo "python-etcd==0.4.5" >> /tmp/requirements.txt \
 && pip install -c /tmp/constraints.txt -r /tmp/requirements.txt \
 && python -c "import torch, sys; sys.exit(0 if open('/tmp/constraints.txt').read().strip() == f'torch=={torch.__version__}' else 1)"

COPY dispatcher/ dispatcher/
COPY producer/ producer/
COPY trainer/ trainer/
RUN pip install --no-deps . \
 && python -c "import trainer, torch.distributed.run"

# Non-root; HOME and outputs on writable paths (mount the RWX volume at SWEEPQ_OUTPUT_DIR).
RUN groupadd --gid 10001 sweepq && useradd --uid 10001 --gid 10001 --home-dir /home/sweepq --create-home sweepq \
 && mkdir -p /workspace/outputs && chown sweepq:sweepq /workspace/outputs
USER 10001:10001
ENV HOME=/home/sweepq
WORKDIR /workspace

# The dispatcher's job manifests pass `torchrun` flags then `-m trainer --key=value ...` as args.
ENTRYPOINT ["torchrun"]
CMD ["--standalone", "--nproc_per_node=1", "-m", "trainer", "--help"]
