"""Sample file contents several test modules and benchmarks share (one copy each)."""
from __future__ import annotations

# The head of a .github/flops.yml: the registry, the default branch of the recorded payloads
# (`master`) and the FL reference design's two images. Modules append their own sections.
TWO_IMAGES = """\
registry: harbor.example.com/flops
pr_registry: harbor.example.com/flops-pr
branches: [master]
images:
  - name: server
    dockerfile: Dockerfile.server
  - name: client
    dockerfile: Dockerfile.client
"""
