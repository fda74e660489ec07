"""Asset tests: real materializations in temp state folders."""
