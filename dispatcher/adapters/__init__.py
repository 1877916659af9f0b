"""Adapters: the only place that talks to AWS and Kubernetes SDKs, always through injected clients.

SDKs are imported inside functions, so importing this package stays cheap and SDK-free.
"""
