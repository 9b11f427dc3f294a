"""hil_fault: fault injection and leak invariants for the in-guest tests (stdlib only).

kconfig reads /proc/config.gz; knobs sets the fault-injection debugfs attributes for a sweep and
restores them; failnth arms the calling thread's /proc/thread-self/fail-nth; armed holds an ioctl (or
close/pwrite) built in advance so nothing is allocated between arming and the call; kmsg reads
/dev/kmsg and finds the stacks of injected failures and kernel reports; kmemleak scans; snapshot
compares the system's state before and after a step; sweep drives an operation through fault 1, 2,
...; race holds the seeded plan of the race tests. The pure parts are tested on the host
(tests/test_guest_fault_*.py, tests/test_guest_race_*.py).
"""
