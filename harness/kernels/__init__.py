"""Kernels for the test VMs: stock Debian images, Debian sources and local trees built here.

Public API: `resolve_kernel(spec, progress=..., offline=..., series=..., fragments=...)` returning a
`KernelImage`; `parse_spec`; `build_kernel` for callers that already hold a source tree.
"""
