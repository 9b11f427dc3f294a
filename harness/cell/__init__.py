"""One cell (topology x kernel x test selection): its request and result, its scratch directory, and
the builders that turn it into a plan and a command line. The sequencer is harness/run.py."""
