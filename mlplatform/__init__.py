"""mlplatform.

Importing the package sets one process-wide default before pyarrow is imported:
Arrow allocates from the C library's allocator (``ARROW_DEFAULT_MEMORY_POOL=system``)
instead of its bundled mimalloc. With the kernel's transparent huge pages in
``madvise`` mode (the usual default), mimalloc's fresh memory is faulted in 2 MB
huge pages that the kernel zeroes whole: ingesting a million rows spent about 1 s
of system CPU that way, against 0.55 s on the system allocator, and took 1.15-1.37 s
instead of 1.43-1.64 s (``benchmarks/ingestion.py``; see ``benchmarks/README.md``).
A value already in the environment wins, and a process that imported pyarrow
before this package keeps the pool it has.
"""

import os

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
