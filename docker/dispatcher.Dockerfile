# syntax=docker/dockerfile:1
# The in-cluster dispatcher (infra/k8s CronJob): core dependencies only, no torch.
# Build from the repository root:  docker build -f docker/dispatcher.Dockerfile -t sweepq-dispatcher:0.1.0 .
FROM python:3.12.8-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/sweepq
COPY pyproject.toml ./
COPY docker/requirements.py docker/requirements.py
RUN python docker/requirements.py > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY dispatcher/ dispatcher/
COPY producer/ producer/
COPY trainer/ trainer/
# The trainer package is copied because it is part of the one distribution; without its extras it
# is never imported here. The check below fails the build if torch slipped in.
RUN pip install --no-deps . \
 && python -c "import importlib.util, sys; import dispatcher.cli, dispatcher.lambda_handler; sys.exit(importlib.util.find_spec('torch') is not None)"

RUN groupadd --gid 10001 sweepq && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp sweepq
USER 10001:10001
ENV HOME=/tmp
WORKDIR /tmp

ENTRYPOINT ["dispatcher"]
CMD ["tick", "--output", "json"]
