"""``producer``: the researcher's command line for sweepq (validate, expand, submit, status, list, logs, cancel, pause, resume).

It only needs permission to *send* to the team's SQS queue and *read* the DynamoDB table; the
dispatcher does everything else. See :mod:`producer.cli` for the commands and exit codes.
"""
