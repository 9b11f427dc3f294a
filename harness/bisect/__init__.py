"""`hil bisect`: which commit of a git range, or which patch of a series, first makes the selected tests of
one pinned topology go bad.

    candidates.py   the ordered candidates (first-parent commits, or series prefixes) and the input checks
    search.py       the state machine: marks so far -> the next candidate to test, or the answer (pure)
    classify.py     a cell's verdict -> good, bad or skip under --bad-on (pure)
    record.py       bisect.json in the output directory: the steps so far, so that a rerun resumes
    orchestrate.py  the loop, with building and running a cell injected
    command.py      the real wiring (kernel builds through the cache, cells through run_prepared)
"""
