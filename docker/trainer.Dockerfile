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

# Non-root, numeric (trial pods run with runAsNonRoot; Pod Security `restricted`): UID/GID 10001,
# the runAsUser every Kubernetes kind renders (dispatcher/backends/kube_options.py TRIAL_UID). Not
# 1000: that is ec2-user on Amazon Linux EKS nodes, and a trial should share no UID with the node.
# Writable paths are only /tmp (HOME, TMPDIR and every cache: Hugging Face, torch, Triton,
# matplotlib, W&B) and /outputs (SWEEPQ_OUTPUT_DIR; the outputs PVC is mounted over it), both
# sticky and world-writable so that a pod run as another numeric UID works too; /dev/shm is the
# memory emptyDir the backends mount. Nothing else is written, so the root filesystem may be
# read-only.
RUN groupadd --gid 10001 sweepq \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp sweepq \
 && mkdir -p /outputs && chmod 1777 /outputs /tmp
USER 10001:10001
ENV HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    HF_HOME=/tmp/.cache/huggingface \
    TORCH_HOME=/tmp/.cache/torch \
    TORCHINDUCTOR_CACHE_DIR=/tmp/.cache/torchinductor \
    TRITON_CACHE_DIR=/tmp/.cache/triton \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    WANDB_DIR=/tmp/wandb \
    WANDB_CACHE_DIR=/tmp/.cache/wandb \
    WANDB_CONFIG_DIR=/tmp/.config/wandb \
    SWEEPQ_OUTPUT_DIR=/outputs
WORKDIR /tmp

# The dispatcher's job manifests pass `torchrun` flags then `-m trainer --key=value ...` as args.
ENTRYPOINT ["torchrun"]
CMD ["--standalone", "--nproc_per_node=1", "-m", "trainer", "--help"]
