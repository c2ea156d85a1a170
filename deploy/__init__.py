"""Flower's deployment engine for fedsynth: certificates, SuperLink and SuperNodes, job submission.

The federation operator runs the SuperLink and submits runs; each hospital runs one SuperNode
with the fedsynth ClientApp (``client/Dockerfile``). See ``deploy/README.md``.
"""
