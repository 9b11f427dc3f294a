"""The kernel's own selftests (tools/testing/selftests/<name>) as a test source of a cell.

catalog.py   what each known selftest needs (a device, hugepages, module parameters, time per binary)
build.py     headers_install + make of a selftest directory from the kernel under test's tree, cached
manifest.py  what the guest is told (run_dir/kselftest/manifest.json), the guest's outputs read back
ktap.py      KTAP / kselftest TAP output -> results (pure)
records.py   results, build failures, crashes and timeouts -> TestRecords (pure)
devices.py   the topology a cell boots: an igb added on a free root port when a selftest needs one
cell.py      the hooks run_cell calls: before boot (build, manifest) and after the VM (records)
"""
