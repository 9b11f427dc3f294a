"""The host -> guest contract (plan.py, protocol.py) and what runs inside the guest (entry.py, plugin.py).

Everything here is stdlib-only: it is imported by the guest's Python from the read-only host tree.
"""
