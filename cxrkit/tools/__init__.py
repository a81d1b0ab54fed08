"""Tools around the kit: throughput benchmarks (:mod:`~cxrkit.tools.bench`, ``make bench``) and a
headless screenshot of a report page (:mod:`~cxrkit.tools.screenshot`)."""
