"""`hil bundle` and `hil reproduce`: one cell packed into a single archive with everything needed to run
it again elsewhere (the exact topology, the kernel and its .config, the series, the selection, the known
issues in force, the host's facts, the original results and console, and a raw script that needs no
p2p-hil checkout), read back with every member checked, and rerun with the outcomes compared test by test.

make.py writes a bundle, read.py reads one (nothing trusted before it is checked), reproduce.py holds the
pure pieces of a reproduction, command.py the two subcommands.
"""
