"""Environment variable names a sweep's sender may never set. Pure; shared by the launch-settings
validator (:mod:`dispatcher.core.launch`, every sweep) and the operator policy
(:mod:`dispatcher.core.policy`, which can reserve more but never fewer).

Why each group is reserved (the reason is part of the error a sender sees):

* **sweepq's own contract** — ``SWEEPQ_*``, ``SWEEP_ID``, ``TRIAL_*``, ``WANDB_*``, ``POD_NAME``:
  the identity of the trial and where the trusted trainer writes. A sender who sets ``SWEEP_ID`` of
  another sweep, or ``WANDB_BASE_URL`` next to the injected ``WANDB_API_KEY``, steers the trainer
  onto someone else's trial or hands the key to another server.
* **cloud and cluster credentials** — ``AWS_*`` (``AWS_CONTAINER_CREDENTIALS_FULL_URI`` and
  ``AWS_ENDPOINT_URL`` redirect Pod Identity and every SDK call), ``KUBERNETES_*``.
* **code injection into a fixed command** — ``LD_*``, ``PYTHON*``, ``PATH``, ``BASH_ENV``, ``ENV``,
  ``BASH_FUNC_*``, ``SHELLOPTS``/``BASHOPTS`` with ``PS4`` (``xtrace`` runs the command substitution
  in ``PS4`` for every line a non-root bash runs), ``PERL*``, ``RUBYOPT``/``RUBYLIB``,
  ``NODE_OPTIONS``/``NODE_PATH``, the JVM's ``*JAVA_OPTIONS``/``CLASSPATH``, ``LUA_INIT``, glibc's
  ``GCONV_PATH``/``GLIBC_TUNABLES``, ``GIT_*`` (``GIT_SSH_COMMAND``, ``GIT_CONFIG_*``), the plugin
  loaders of NCCL, Open MPI (``OMPI_MCA_*``), libfabric (``FI_PROVIDER_PATH``) and UCX: an operator's
  template may pin the image and command; these would run other code anyway.
* **endpoints** — ``HF_ENDPOINT``, ``PIP_INDEX_URL`` and the other package indexes,
  ``MLFLOW_TRACKING_URI``, ``*_BASE_URL``, ``*_API_BASE``, ``*_ENDPOINT``, ``*_ENDPOINT_URL``: they
  send the trial's data, models, packages, metrics — and the credentials an operator's template
  injects for them — to another server (as ``WANDB_BASE_URL`` would with the W&B key).
* **the distributed launch** — ``PET_*``, ``TORCHELASTIC_*``, ``MASTER_ADDR``/``MASTER_PORT``,
  ``RANK``… are set by torchrun and the job operators; a sender's value could join another job's
  rendezvous.
* **device exposure** — ``NVIDIA_*``: ``NVIDIA_VISIBLE_DEVICES=all`` makes the NVIDIA container
  runtime hand every GPU of the node to the pod, past the device plugin and every GPU cap.
* **traffic interception** — ``*_PROXY`` and CA bundle variables (``SSL_CERT_FILE``…).
* **secrets** — names that look like secrets: ``PASSWORD``, ``PASSWD``, ``PASSPHRASE``, ``SECRET``,
  ``CREDENTIAL`` anywhere in the name (``PGPASSWORD``, ``MY_SECRETS``), ``KEY``, ``KEYS`` or
  ``TOKEN`` ending a word (``APIKEY``, ``HF_TOKEN``, ``HF-TOKEN``, ``OPENAI API KEY``; not
  ``TOKENIZERS_PARALLELISM``), ``PASS`` as a word (``DB_PASS``): secrets never travel through the
  queue; they reach pods through a Secret. Words are split at anything that is not a letter or a
  digit, so a refused body's invalid names (``HF-TOKEN``) are recognised too.

Names are compared case-insensitively (``http_proxy`` is read by curl and requests too). A name is
matched whole: a trailing newline is no valid name (``fullmatch``, never ``$``, which Python also
matches before a final ``\n``).
"""

from __future__ import annotations

import fnmatch
import re
from typing import Iterable

# Secrets never travel through SQS or DynamoDB: they reach the pod through a secretKeyRef.
SECRET_ENV = re.compile(
    r"PASSW(?:OR)?D|PASSPHRASE|SECRET|CREDENTIAL"  # anywhere: PGPASSWORD, DBPASSWORD, MY_SECRETS
    r"|(?:KEYS?|TOKEN)(?![A-Z0-9])"  # ending a word: APIKEY, API_KEYS, HF_TOKEN, "OPENAI API KEY"
    r"|(?<![A-Z0-9])PASS(?![A-Z0-9])",  # a word of its own: DB_PASS, SMTP_PASS
    re.IGNORECASE,
)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # always fullmatch
MAX_ENV_NAME = 128

# (fnmatch pattern, why) — upper-case; matched against the upper-cased name.
RESERVED_ENV: tuple[tuple[str, str], ...] = (
    ("SWEEPQ_*", "sweepq sets it for every trial"),
    ("SWEEP_ID", "sweepq sets it for every trial"),
    ("TRIAL_*", "sweepq sets it for every trial"),
    ("POD_NAME", "sweepq sets it from the pod's own name"),
    ("WANDB_*", "sweepq sets the W&B run identity, and the key comes only from the Secret"),
    ("AWS_*", "it steers the pod's AWS credentials and endpoints"),
    ("KUBERNETES_*", "Kubernetes sets it"),
    ("LD_*", "it makes the dynamic loader run other code"),
    ("PYTHON*", "it changes which code the Python interpreter runs"),
    ("PATH", "it changes which programs the command runs"),
    ("BASH_ENV", "shells run the file it names"),
    ("ENV", "shells run the file it names"),
    ("BASH_FUNC_*", "bash imports functions from it"),
    ("RUBYOPT", "it changes which code ruby runs"),
    ("NODE_OPTIONS", "it changes which code node runs"),
    ("JAVA_TOOL_OPTIONS", "it changes which code the JVM runs"),
    ("SHELLOPTS", "bash turns on the options it names at start (xtrace runs PS4's command substitutions)"),
    ("BASHOPTS", "bash turns on the options it names at start"),
    ("PS[0-9]", "bash expands it (PS4 with xtrace runs its command substitutions)"),
    ("PROMPT_COMMAND", "bash runs it"),
    ("BASH_XTRACEFD", "bash writes its trace where it says"),
    ("BASH_LOADABLES_PATH", "bash loads builtins from it"),
    ("PERL*", "it changes which code perl runs"),
    ("RUBYLIB", "it changes which code ruby runs"),
    ("NODE_PATH", "it changes which code node runs"),
    ("JDK_JAVA_OPTIONS", "it changes which code the JVM runs"),
    ("_JAVA_OPTIONS", "it changes which code the JVM runs"),
    ("CLASSPATH", "it changes which code the JVM runs"),
    ("LUA_INIT*", "lua runs it at start"),
    ("LUA_PATH*", "it changes which code lua runs"),
    ("LUA_CPATH*", "it changes which code lua runs"),
    ("GCONV_PATH", "glibc loads the conversion modules it names"),
    ("GLIBC_TUNABLES", "it changes glibc's behaviour at load time"),
    ("GIT_*", "git runs the programs and reads the configuration it names (GIT_SSH_COMMAND, GIT_CONFIG_*)"),
    ("NCCL_*PLUGIN*", "NCCL loads the library it names"),
    ("OMPI_MCA_*", "Open MPI loads the components and runs the agents it names"),
    ("PMIX_MCA_*", "PMIx loads the components it names"),
    ("FI_PROVIDER_PATH", "libfabric loads the providers it names"),
    ("UCX_MODULE_DIR", "UCX loads the modules it names"),
    ("PET_*", "torchrun and the job operator set it"),
    ("TORCHELASTIC_*", "torchrun sets it"),
    ("MASTER_ADDR", "torchrun and the job operator set it"),
    ("MASTER_PORT", "torchrun and the job operator set it"),
    ("RANK", "torchrun sets it"),
    ("WORLD_SIZE", "torchrun sets it"),
    ("LOCAL_RANK", "torchrun sets it"),
    ("LOCAL_WORLD_SIZE", "torchrun sets it"),
    ("GROUP_RANK", "torchrun sets it"),
    ("GROUP_WORLD_SIZE", "torchrun sets it"),
    ("ROLE_RANK", "torchrun sets it"),
    ("ROLE_WORLD_SIZE", "torchrun sets it"),
    ("NODE_RANK", "torchrun sets it"),
    ("NVIDIA_*", "the NVIDIA runtime exposes the GPUs it names, past every GPU cap"),
    ("*_PROXY", "it routes the trial's traffic through another server"),
    ("SSL_CERT_FILE", "it replaces the trusted certificate authorities"),
    ("SSL_CERT_DIR", "it replaces the trusted certificate authorities"),
    ("REQUESTS_CA_BUNDLE", "it replaces the trusted certificate authorities"),
    ("CURL_CA_BUNDLE", "it replaces the trusted certificate authorities"),
    # endpoints last: a more specific entry above (PET_*, AWS_*) gives the better reason
    ("HF_ENDPOINT", "it sends the trial's model and data downloads (and the HF token) to another server"),
    ("PIP_*INDEX*", "it makes pip install packages from another server"),
    ("PIP_FIND_LINKS", "it makes pip install packages from another server"),
    ("PIP_TRUSTED_HOST", "it makes pip trust another server"),
    ("PIP_CONFIG_FILE", "it makes pip read another configuration"),
    ("UV_*INDEX*", "it makes uv install packages from another server"),
    ("UV_FIND_LINKS", "it makes uv install packages from another server"),
    ("CONDA_CHANNELS", "it makes conda install packages from another server"),
    ("MLFLOW_*URI", "it sends the trial's metrics and artifacts to another server"),
    ("*_BASE_URL", "it sends the client's requests (and its credentials) to another server"),
    ("*_API_BASE", "it sends the client's requests (and its credentials) to another server"),
    ("*_ENDPOINT", "it sends the client's requests (and its credentials) to another server"),
    ("*_ENDPOINT_URL", "it sends the client's requests (and its credentials) to another server"),
)


def env_name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid environment variable name, or ``None``."""
    if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
        return "not a valid environment variable name — use letters, digits and _, not starting with a digit"
    if len(name) > MAX_ENV_NAME:
        return f"longer than {MAX_ENV_NAME} characters — use a shorter name"
    return None


def reserved_reason(name: str, extra: Iterable[str] = ()) -> str | None:
    """Why no sender may set ``name`` (built-in reserved names, ``extra`` fnmatch patterns from the
    operator policy), secret-looking names first, or ``None`` when it is not reserved. Case-insensitive."""
    if SECRET_ENV.search(name):
        return ("looks like a secret; secrets must not travel through the queue — store it in a Kubernetes "
                "Secret (see wandb_secret)")
    upper = name.upper()
    for pattern, why in RESERVED_ENV:
        if fnmatch.fnmatchcase(upper, pattern):
            return f"reserved ({pattern}): {why}"
    for pattern in extra:
        if fnmatch.fnmatchcase(upper, pattern.upper()):
            return f"reserved by the operator policy ({pattern})"
    return None
