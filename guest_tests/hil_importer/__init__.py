"""hil_importer: typed drivers for the p2p-hil test importer modules (ctypes + stdlib only).

p2p.P2pImporter drives /dev/hil_p2p, rdma.RdmaImporter /dev/hil_rdma; loader reads the host's
modules.json and loads the modules; expect restates the kernel's mapping rules; kprobes watches the
kernel's routing decision; verbs calls libibverbs. fixtures is the pytest plugin the test files load
(pytest_plugins); case holds what they import directly.
"""
