"""GNU Radio flowgraphs (.grc, for GNU Radio Companion / grcc) and their Python hier blocks."""
