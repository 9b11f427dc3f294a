"""Running the kernel's selftests in the guest: read the host's manifest, prepare the guest the way the
selftests' own scripts do, run each binary with a limit and leave its raw output in the run directory
for the host to parse (harness/kselftest)."""

from hil_kselftest.manifest import Selftest, load_manifest
from hil_kselftest.prepare import NotRunnable, prepare_selftest
from hil_kselftest.runner import Ended, run_binary

__all__ = ["Ended", "NotRunnable", "Selftest", "load_manifest", "prepare_selftest", "run_binary"]
