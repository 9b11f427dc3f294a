"""`hil validate SERIES.mbox --kernel BASE`: a patch series checked the way a maintainer would before
it is posted: per patch (applies, checkpatch, builds, new compiler warnings), then the test matrix on
the base and on base+series compared, and a report ready for a reply on the mailing list."""
